//! What a capture leaves for later: the bundle (written safely, read within limits) and the
//! pcapng of the handshakes' packets.

pub mod bundle;
pub mod pcapng;
