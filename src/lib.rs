//! bolide: a VOEvent broker.
pub mod schema;
pub mod store;
pub mod xml;
pub mod xsd;
