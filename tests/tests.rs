//! One integration-test binary (one link) holding every test module.

mod suite;
