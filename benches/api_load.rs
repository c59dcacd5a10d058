//! API load test (placeholder; filled in by the hostile-input work).
fn main() {}
