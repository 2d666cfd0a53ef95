//! The `custom_model` example (a user-defined model around two public `SsmBlock`s) learns the
//! copying task.

#[path = "../examples/custom_model.rs"]
#[allow(dead_code)]
mod custom_model;

#[test]
fn the_custom_model_example_learns_copying() {
    let acc = custom_model::train(1000);
    eprintln!("custom_model: test token accuracy {acc}");
    // chance is 1/4 per symbol
    assert!(acc >= 0.99, "test token accuracy {acc}");
}
