//! The HTTP API gateway (`micro api`): JSON over HTTP to any micro service, with schemas
//! read by gRPC reflection. (Being built: see issue 6.)

// Parts are built before the gateway that uses them (issue 6).
#![allow(dead_code)]

pub(crate) mod openapi;
pub(crate) mod rest;

use prost_reflect::{DescriptorPool, ServiceDescriptor};

/// What the gateway knows of one registered service: its schemas, fetched by reflection.
#[derive(Debug)]
pub(crate) struct ServiceSchema {
    /// The registered name (`greeter`).
    pub(crate) name: String,
    /// The versions of the records the schemas were fetched for, sorted, joined by `,`;
    /// a change means the schemas are fetched again.
    pub(crate) version: String,
    /// Every file the service serves, with imports.
    pub(crate) pool: DescriptorPool,
    /// The gRPC services it serves, without health and reflection.
    pub(crate) services: Vec<ServiceDescriptor>,
    /// Its REST routes from `google.api.http` annotations (empty without any).
    pub(crate) rest: rest::RestRoutes,
}
