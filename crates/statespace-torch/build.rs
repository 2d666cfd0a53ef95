//! Link settings for binaries and tests of this crate:
//! - keep `libtorch_cuda.so` linked: the linker drops it as unneeded (nothing references its symbols
//!   directly), and then CUDA calls fail with "Cannot query cuDNN version without ATen_cuda library";
//! - an rpath to the torch libraries the build linked against (the pinned PyPI wheel's `torch/lib`),
//!   so tests run without `LD_LIBRARY_PATH`; a machine with its own torch sets `LD_LIBRARY_PATH`,
//!   which takes precedence.
use std::process::Command;

fn torch_lib_dir() -> Option<String> {
    if let Ok(dir) = std::env::var("LIBTORCH") {
        return Some(format!("{dir}/lib"));
    }
    let python = std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".into());
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
}

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=PYTHON_SYS_EXECUTABLE");
    println!("cargo:rerun-if-env-changed=PATH");
    if let Some(dir) = torch_lib_dir() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch_cuda");
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}
