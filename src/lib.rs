//! bolide: a VOEvent broker.
pub mod xml;
