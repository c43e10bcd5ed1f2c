//! bolide: a VOEvent broker.
pub mod schema;
pub mod xml;
pub mod xsd;
