//! Helpers shared by the integration tests (each test file includes what it uses).

#![allow(dead_code)] // not every test file uses every helper

pub mod dockerfile;
pub mod kustomize;
pub mod schema;
