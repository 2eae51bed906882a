//! Address prefixes (parsing, containment, overlap, masks) and the internet checksum. A
//! leaf: std and serde only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// The mask of `prefix` bits over an address of `width` bits (32 or 128), as a u128 whose low
/// `width` bits are the mask.
fn mask(width: u32, prefix: u8) -> u128 {
    let ones = u128::MAX >> (128 - width);
    ones & ones
        .checked_shl(width - u32::from(prefix).min(width))
        .unwrap_or(0)
}

/// An address as (its bits, its width).
fn bits(ip: IpAddr) -> (u128, u32) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

impl Cidr {
    /// The longest prefix of the address's family (a single host).
    pub fn max_prefix(&self) -> u8 {
        if self.addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    pub fn is_host(&self) -> bool {
        self.prefix == self.max_prefix()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (a, wa) = bits(self.addr);
        let (b, wb) = bits(ip);
        let m = mask(wa, self.prefix);
        wa == wb && a & m == b & m
    }

    /// The prefix with its host bits cleared.
    pub fn network(&self) -> Cidr {
        let (a, w) = bits(self.addr);
        let n = a & mask(w, self.prefix);
        let addr = match self.addr {
            IpAddr::V4(_) => IpAddr::V4((n as u32).into()),
            IpAddr::V6(_) => IpAddr::V6(n.into()),
        };
        Cidr {
            addr,
            prefix: self.prefix,
        }
    }

    /// Whether two prefixes share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// The address's bytes (an IPv4 address in the first four) and the mask's, as the kernel
    /// compares them.
    pub fn bytes_and_mask(&self) -> ([u8; 16], [u8; 16]) {
        let mut b = [0u8; 16];
        let (m, width) = match self.addr {
            IpAddr::V4(a) => {
                b[..4].copy_from_slice(&a.octets());
                ((mask(32, self.prefix) as u32).to_be_bytes().to_vec(), 4)
            }
            IpAddr::V6(a) => {
                b = a.octets();
                (mask(128, self.prefix).to_be_bytes().to_vec(), 16)
            }
        };
        let mut mb = [0u8; 16];
        mb[..width].copy_from_slice(&m);
        (b, mb)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_cidr(&s).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_cidr(s)
    }
}

/// An address or a prefix (`10.0.0.0/8`, `10.0.0.1`, `fd00::/8`).
pub fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{s}` is not an address or CIDR (e.g. 10.0.0.0/8)"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("`{s}`: the prefix length must be 0..={max}"))?,
    };
    Ok(Cidr { addr, prefix })
}

/// The internet checksum (RFC 1071): the one's complement of the one's complement sum of
/// the big-endian 16-bit words of `data`, an odd last byte padded with a zero. Over data
/// that holds its own correct checksum, it is 0.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The TCP checksum of `segment` over the IPv4 pseudo-header, its checksum field (bytes
/// 16..18) taken as zero.
pub fn tcp_checksum_v4(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u16 {
    let len = u16::try_from(segment.len()).expect("a TCP segment over IPv4 fits in 64 KiB");
    let mut pseudo = Vec::with_capacity(12 + segment.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&len.to_be_bytes());
    tcp_checksum(pseudo, segment)
}

/// The TCP checksum of `segment` over the IPv6 pseudo-header (RFC 8200), its checksum field
/// taken as zero.
pub fn tcp_checksum_v6(src: Ipv6Addr, dst: Ipv6Addr, segment: &[u8]) -> u16 {
    let len = u32::try_from(segment.len()).expect("a TCP segment fits in 4 GiB");
    let mut pseudo = Vec::with_capacity(40 + segment.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&len.to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 6]);
    tcp_checksum(pseudo, segment)
}

fn tcp_checksum(mut pseudo: Vec<u8>, segment: &[u8]) -> u16 {
    let field = pseudo.len() + 16;
    pseudo.extend_from_slice(segment);
    let end = pseudo.len().min(field + 2);
    if field < end {
        pseudo[field..end].fill(0);
    }
    internet_checksum(&pseudo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internet_checksum_as_rfc_1071_computes_it() {
        // RFC 1071 section 3's example: the sum of these words is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data), !0xddf2);
        // An odd byte is the high half of a last word.
        assert_eq!(internet_checksum(&[0x12]), !0x1200);
        assert_eq!(internet_checksum(&[]), 0xffff);
        // Carries fold back in, however many there are.
        assert_eq!(internet_checksum(&[0xff; 1 << 17]), 0);
        // Data holding its checksum sums to 0.
        let mut header = [
            0x45, 0, 0, 0x3c, 0x1c, 0x46, 0x40, 0, 0x40, 6, 0, 0, 0xac, 0x10, 0x0a, 0x63, 0xac,
            0x10, 0x0a, 0x0c,
        ];
        let sum = internet_checksum(&header);
        assert_eq!(sum, 0xb1e6);
        header[10..12].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(internet_checksum(&header), 0);
    }

    #[test]
    fn tcp_checksums_take_their_field_as_zero() {
        let (s4, d4) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut seg = [7u8; 20];
        let sum = tcp_checksum_v4(s4, d4, &seg);
        seg[16..18].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(tcp_checksum_v4(s4, d4, &seg), sum, "its own field ignored");
        let mut all = Vec::from([10, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0, 20]);
        all.extend_from_slice(&seg);
        assert_eq!(internet_checksum(&all), 0);

        let (s6, d6): (Ipv6Addr, Ipv6Addr) =
            ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let sum = tcp_checksum_v6(s6, d6, &seg);
        seg[16..18].copy_from_slice(&sum.to_be_bytes());
        let mut all = Vec::new();
        all.extend_from_slice(&s6.octets());
        all.extend_from_slice(&d6.octets());
        all.extend_from_slice(&[0, 0, 0, 20, 0, 0, 0, 6]);
        all.extend_from_slice(&seg);
        assert_eq!(internet_checksum(&all), 0);
        // Shorter than a header: nothing to skip.
        assert_eq!(
            tcp_checksum_v4(s4, d4, &[1, 2, 3]).wrapping_sub(tcp_checksum_v4(
                s4,
                d4,
                &[1, 2, 3, 0]
            )),
            1
        );
    }

    fn c(s: &str) -> Cidr {
        parse_cidr(s).unwrap()
    }

    #[test]
    fn contains_and_overlaps() {
        assert!(c("10.0.0.0/8").contains("10.255.1.2".parse().unwrap()));
        assert!(!c("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        assert!(c("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
        assert!(!c("0.0.0.0/0").contains("::1".parse().unwrap()));
        assert!(c("fd00::/8").contains("fd12::1".parse().unwrap()));
        assert!(c("::/0").contains("fe80::1".parse().unwrap()));
        assert!(c("10.0.0.0/8").overlaps(&c("10.1.0.0/16")));
        assert!(!c("10.0.0.0/16").overlaps(&c("10.1.0.0/16")));
        assert!(c("10.0.0.5").is_host());
    }

    #[test]
    fn network_and_masks() {
        assert_eq!(c("10.1.2.3/20").network(), c("10.1.0.0/20"));
        assert_eq!(c("fd00::1/64").network(), c("fd00::/64"));
        assert_eq!(c("1.2.3.4/0").network(), c("0.0.0.0/0"));
        let (b, m) = c("10.1.2.3/20").bytes_and_mask();
        assert_eq!(&b[..4], &[10, 1, 2, 3]);
        assert_eq!(&m[..4], &[255, 255, 240, 0]);
        assert_eq!(&m[4..], &[0; 12]);
        let (_, m6) = c("fd00::/65").bytes_and_mask();
        assert_eq!(&m6[..9], &[255, 255, 255, 255, 255, 255, 255, 255, 128]);
        assert_eq!(&m6[9..], &[0; 7]);
    }

    #[test]
    fn parses() {
        assert_eq!(c("10.0.0.1").prefix, 32);
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("nope").is_err());
        assert_eq!(c("::1").prefix, 128);
    }
}
