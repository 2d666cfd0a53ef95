//! With the `torch` feature: the link settings the torch engine needs in the `statespace` binary
//! (the same as `statespace-torch`'s build script: keep `libtorch_cuda.so` linked, and an rpath to
//! the torch libraries the build used; `LD_LIBRARY_PATH` takes precedence on another machine).
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=PYTHON_SYS_EXECUTABLE");
    if std::env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    let dir = std::env::var("LIBTORCH")
        .map(|d| format!("{d}/lib"))
        .ok()
        .or_else(|| {
            let python =
                std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".into());
            let out = Command::new(python)
                .args([
                    "-c",
                    "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
                ])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        });
    if let Some(dir) = dir {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{dir}");
    }
    println!("cargo:rustc-link-arg-bins=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg-bins=-ltorch_cuda");
    println!("cargo:rustc-link-arg-bins=-Wl,--as-needed");
}
