//! Everything that talks libp2p: identity, membership, the swarm and its event loop.

pub mod announce;
pub mod behaviour;
pub mod grants;
pub mod identity;
pub mod membership;
pub mod network;
pub mod paths;
