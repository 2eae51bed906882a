//! What a capture leaves for later: the bundle (written safely, read within limits), its
//! versioned on-disk format, and the pcapng of the handshakes' packets.

pub mod bundle;
pub mod format;
pub mod pcapng;
