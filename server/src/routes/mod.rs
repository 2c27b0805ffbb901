//! The handlers, by audience.

pub mod admin;
pub mod gateway;
pub mod ops;
pub mod uploads;
