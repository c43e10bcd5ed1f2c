//! bolide: a VOEvent broker.
pub mod store;
pub mod xml;
