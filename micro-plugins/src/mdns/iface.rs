//! Which IPv4 interfaces a registry uses: the selection, resolved against the host's
//! interfaces, and the source-address filter that goes with it.

use std::{io, net::Ipv4Addr};

use super::Interfaces;

/// The IPv4 loopback interface as the loopback-only selection uses it, whatever the host
/// reports: 127.0.0.1 in 127.0.0.0/8.
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;
const LOOPBACK_MASK: Ipv4Addr = Ipv4Addr::new(255, 0, 0, 0);

/// One selected interface address: the registry joins the mDNS group on `addr`, sends
/// multicast with `IP_MULTICAST_IF` = `addr`, and accepts packets from `addr/netmask`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Iface {
    pub(crate) name: String,
    pub(crate) addr: Ipv4Addr,
    pub(crate) netmask: Ipv4Addr,
}

impl Iface {
    /// Whether `source` is on this interface's subnet (or is its own address).
    pub(crate) fn contains(&self, source: Ipv4Addr) -> bool {
        let mask = u32::from(self.netmask);
        source == self.addr || u32::from(source) & mask == u32::from(self.addr) & mask
    }
}

/// A host interface address as [`select`] needs it: (name, address, netmask, up).
pub(crate) type HostAddr = (String, Ipv4Addr, Ipv4Addr, bool);

/// The host's IPv4 interface addresses. Reading them sends nothing.
pub(crate) fn host_addrs() -> io::Result<Vec<HostAddr>> {
    Ok(if_addrs::get_if_addrs()?
        .into_iter()
        .filter_map(|i| {
            let up = i.oper_status != if_addrs::IfOperStatus::Down;
            match i.addr {
                if_addrs::IfAddr::V4(v4) => Some((i.name, v4.ip, v4.netmask, up)),
                if_addrs::IfAddr::V6(_) => None,
            }
        })
        .collect())
}

/// The interface addresses a selection stands for, from the host's addresses (`host`, read
/// lazily: the loopback-only selection needs them only for the interface's name).
///
/// - loopback only: exactly 127.0.0.1/8, named as the host names it (else `lo`);
/// - named: the IPv4 addresses of interfaces with these names (up or not: the operator
///   asked for them);
/// - all: every IPv4 address of an interface that is not down, loopback included.
pub(crate) fn select(
    selection: &Interfaces,
    host: impl FnOnce() -> io::Result<Vec<HostAddr>>,
) -> io::Result<Vec<Iface>> {
    match selection {
        Interfaces::LoopbackV4 => {
            let name = host()
                .ok()
                .and_then(|addrs| addrs.into_iter().find(|(_, ip, _, _)| *ip == LOOPBACK))
                .map_or_else(|| "lo".to_owned(), |(name, _, _, _)| name);
            Ok(vec![Iface {
                name,
                addr: LOOPBACK,
                netmask: LOOPBACK_MASK,
            }])
        }
        Interfaces::Named(names) => Ok(host()?
            .into_iter()
            .filter(|(name, _, _, _)| names.iter().any(|n| n.trim() == name))
            .map(iface)
            .collect()),
        Interfaces::All => Ok(host()?
            .into_iter()
            .filter(|(_, _, _, up)| *up)
            .map(iface)
            .collect()),
    }
}

fn iface((name, addr, netmask, _): HostAddr) -> Iface {
    Iface {
        name,
        addr,
        netmask,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> io::Result<Vec<HostAddr>> {
        Ok(vec![
            (
                "lo".into(),
                Ipv4Addr::LOCALHOST,
                Ipv4Addr::new(255, 0, 0, 0),
                true,
            ),
            (
                "eth0".into(),
                Ipv4Addr::new(192, 0, 2, 2),
                Ipv4Addr::new(255, 255, 255, 0),
                true,
            ),
            (
                "eth1".into(),
                Ipv4Addr::new(198, 51, 100, 7),
                Ipv4Addr::new(255, 255, 255, 0),
                false,
            ),
        ])
    }

    fn names(ifaces: &[Iface]) -> Vec<&str> {
        ifaces.iter().map(|i| i.name.as_str()).collect()
    }

    #[test]
    fn loopback_only_is_127_0_0_1_whatever_the_host_has() {
        let lo = select(&Interfaces::LoopbackV4, host).unwrap();
        assert_eq!(
            lo,
            [Iface {
                name: "lo".into(),
                addr: Ipv4Addr::LOCALHOST,
                netmask: Ipv4Addr::new(255, 0, 0, 0)
            }]
        );
        let lo = select(&Interfaces::LoopbackV4, || Err(io::Error::other("no"))).unwrap();
        assert_eq!(names(&lo), ["lo"]);
        assert!(lo[0].contains(Ipv4Addr::new(127, 1, 2, 3)));
        assert!(!lo[0].contains(Ipv4Addr::new(192, 0, 2, 2)));
    }

    #[test]
    fn named_and_all() {
        let named = select(&Interfaces::Named(vec![" eth1".into()]), host).unwrap();
        assert_eq!(names(&named), ["eth1"]);
        let all = select(&Interfaces::All, host).unwrap();
        assert_eq!(names(&all), ["lo", "eth0"]);
        assert!(all[1].contains(Ipv4Addr::new(192, 0, 2, 200)));
        assert!(!all[1].contains(Ipv4Addr::new(192, 0, 3, 2)));
        let none = select(&Interfaces::Named(vec!["wlan9".into()]), host).unwrap();
        assert!(none.is_empty());
    }
}
