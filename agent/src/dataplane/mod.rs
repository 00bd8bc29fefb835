#![allow(dead_code)] // Wired into the agent by the networking commit that follows.
//! The packet path between the TUN and the peers.

pub mod frame;
pub mod packet;
