//! The TUN device `edgeway0` and the per-namespace sysctls the data path needs.

use std::io;

use tun_rs::{AsyncDevice, DeviceBuilder};

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("cannot create TUN device {name}: {source}")]
    Create { name: String, source: io::Error },
    #[error("cannot find the index of {name}: {source}")]
    Index { name: String, source: io::Error },
    #[error("cannot set {path}: {source}")]
    Sysctl { path: String, source: io::Error },
    #[error("cannot set the offloads of {name}: {source}")]
    Offload { name: String, source: io::Error },
}

pub struct Tunnel {
    pub device: AsyncDevice,
    pub name: String,
    pub ifindex: u32,
}

/// Creates the TUN (or takes over one a crashed agent left), sets its MTU and brings it up.
pub fn open(name: &str, mtu: u16) -> Result<Tunnel, TunnelError> {
    let device = DeviceBuilder::new()
        .name(name)
        .mtu(mtu)
        .packet_information(false)
        // TCP segmentation offload: the TUN hands over (and takes) super-packets of up to
        // 64 KiB with a virtio-net header, so a bulk flow costs one read and one frame per
        // 64 KiB instead of one per 1500-byte packet.
        .offload(true)
        .build_async()
        .map_err(|source| TunnelError::Create {
            name: name.into(),
            source,
        })?;
    tcp_offloads_only(&device).map_err(|source| TunnelError::Offload {
        name: name.into(),
        source,
    })?;
    let ifindex = nix::net::if_::if_nametoindex(name).map_err(|e| TunnelError::Index {
        name: name.into(),
        source: e.into(),
    })?;
    // Replies arrive on the TUN from addresses the main table routes elsewhere: strict
    // reverse-path filtering would drop them.
    sysctl(&format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), "2")?;
    sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    // IPv6 forwarding is optional: the node may have IPv6 disabled.
    if std::path::Path::new("/proc/sys/net/ipv6/conf/all/forwarding").exists() {
        sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")?;
    }
    Ok(Tunnel {
        device,
        name: name.into(),
        ifindex,
    })
}

// TUNSETOFFLOAD: _IOW('T', 208, unsigned int), the flags passed by value.
nix::ioctl_write_int!(tun_set_offload, b'T', 208);

/// TCP segmentation and checksum offload, but not UDP segmentation (USO), which tun-rs
/// turns on where the kernel has it: a peer on a kernel before 6.2 could not take those
/// super-packets back into its TUN.
fn tcp_offloads_only(device: &AsyncDevice) -> io::Result<()> {
    const TUN_F_CSUM: u64 = 0x01;
    const TUN_F_TSO4: u64 = 0x02;
    const TUN_F_TSO6: u64 = 0x04;
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is the open TUN device, and the flags are TUN_F_* bits.
    unsafe { tun_set_offload(device.as_raw_fd(), TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) }
        .map(|_| ())
        .map_err(io::Error::from)
}

fn sysctl(path: &str, value: &str) -> Result<(), TunnelError> {
    std::fs::write(path, value).map_err(|source| TunnelError::Sysctl {
        path: path.into(),
        source,
    })
}
