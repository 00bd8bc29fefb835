//! The packet path between the TUN and the peers.

pub mod frame;
pub mod packet;
pub mod rx;
pub mod transport;
pub mod tx;
