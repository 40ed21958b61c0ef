//! Helpers shared by the control plane's test binaries.
#![allow(dead_code)]

pub mod app;
pub mod broker;
pub mod db;
