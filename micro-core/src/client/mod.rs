//! The client side: channels that resolve a service name and balance over its nodes.
//! (Stub: being implemented.)

/// Hands out channels.
#[derive(Debug, Clone)]
pub struct Client {}
/// Builds a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {}
/// A channel to a named service.
#[derive(Debug, Clone)]
pub struct Channel {}
/// Opens connections to nodes.
pub trait Connector {}
/// The node that answered a call.
#[derive(Debug, Clone)]
pub struct NodeInfo {}
