//! Tests of REST routes.
