//! The sockmap: the loaded program attached to `PEERS`, and joining two
//! connected sockets (each inserted under the other's cookie, with a
//! byte counter of its own).

use std::os::fd::AsFd;
use std::sync::Mutex;

use aya::maps::{HashMap, MapData, SockHash};
use aya::programs::SkSkb;
use aya::Ebpf;

use crate::program;

pub struct Joiner {
    /// aya's map writes take `&mut`; the kernel's own are atomic.
    maps: Mutex<Maps>,
    /// Holds the program (and so its attachment) for the process's life.
    _ebpf: Ebpf,
}

struct Maps {
    counters: HashMap<MapData, u64, u64>,
    peers: SockHash<MapData, u64>,
}

/// Bytes the kernel moved, per direction, when a join ends.
pub struct Moved {
    pub up: u64,
    pub down: u64,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

impl Joiner {
    /// Loads the program and its maps and attaches the program to `PEERS`.
    pub fn load() -> Result<Joiner, Error> {
        let mut ebpf = Ebpf::load(&program::object())?;
        let taken = |e: &mut Ebpf, name| e.take_map(name).ok_or(format!("no map {name}"));
        let peers = SockHash::try_from(taken(&mut ebpf, program::PEERS)?)?;
        let counters = HashMap::try_from(taken(&mut ebpf, program::COUNTERS)?)?;
        let prog = ebpf.program_mut(program::PROGRAM).ok_or("no program")?;
        let prog: &mut SkSkb = prog.try_into()?;
        prog.load()?;
        prog.attach(peers.fd())?;
        Ok(Joiner {
            maps: Mutex::new(Maps { counters, peers }),
            _ebpf: ebpf,
        })
    }

    /// From now on, what `a` receives the kernel sends out on `b` and the
    /// other way round. Fails (and joins nothing) for a socket the kernel
    /// will not take, such as one whose peer already sent its FIN.
    pub fn join(&self, a: &impl AsFd, b: &impl AsFd) -> Result<(u64, u64), Error> {
        let ca = rustix::net::sockopt::socket_cookie(a)?;
        let cb = rustix::net::sockopt::socket_cookie(b)?;
        let mut m = self.maps.lock().map_err(|_| "poisoned")?;
        let joined = (|| -> Result<(), Error> {
            m.counters.insert(ca, 0, 0)?;
            m.counters.insert(cb, 0, 0)?;
            m.peers.insert(ca, b.as_fd(), 0)?;
            m.peers.insert(cb, a.as_fd(), 0)?;
            Ok(())
        })();
        if let Err(e) = joined {
            Self::forget(&mut m, ca, cb);
            return Err(e);
        }
        Ok((ca, cb))
    }

    /// Ends a join (the sockets leave `PEERS` by themselves when closed).
    pub fn unjoin(&self, (ca, cb): (u64, u64)) -> Moved {
        let Ok(mut m) = self.maps.lock() else {
            return Moved { up: 0, down: 0 };
        };
        let moved = Moved {
            up: m.counters.get(&ca, 0).unwrap_or(0),
            down: m.counters.get(&cb, 0).unwrap_or(0),
        };
        Self::forget(&mut m, ca, cb);
        moved
    }

    fn forget(m: &mut Maps, ca: u64, cb: u64) {
        for c in [ca, cb] {
            let _ = m.counters.remove(&c);
            let _ = m.peers.remove(&c);
        }
    }
}
