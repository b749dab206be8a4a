//! The server side. (Stub: being implemented.)

/// A running micro service.
#[derive(Debug)]
pub struct Service {}
/// Builds a [`Service`].
#[derive(Debug)]
pub struct ServiceBuilder {}
/// An error starting or running a service.
#[derive(Debug)]
pub struct ServiceError {}
