//! The stream verdict program, assembled here, and the ELF object that
//! carries it to aya (which creates the maps, patches their descriptors
//! into the program and loads it).
//!
//! For every segment received on a joined socket S the program:
//! 1. reads S's socket cookie (`bpf_get_socket_cookie`);
//! 2. looks it up in `COUNTERS` (cookie → bytes received on S). No entry:
//!    S is not joined (yet), and the segment is passed to S's own receive
//!    queue (`SK_PASS`), where user space reads it;
//! 3. adds the segment's length to that counter (atomically: segments of
//!    two sockets are handled on several CPUs);
//! 4. redirects the segment to the egress of `PEERS[cookie]`, S's peer
//!    (`bpf_sk_redirect_hash`, flags 0), returning what it returns.

use object::write::{Object, Relocation, Symbol, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags, SymbolKind,
    SymbolScope,
};

/// The program's name in the object (`Ebpf::program_mut`).
pub const PROGRAM: &str = "verdict";
/// cookie → bytes received on that socket (a hash map, u64 → u64).
pub const COUNTERS: &str = "COUNTERS";
/// cookie of a socket → its peer socket (a sockhash, u64 → socket).
pub const PEERS: &str = "PEERS";

/// Joined sockets at most (two per connection).
const MAX_SOCKETS: u32 = 65_536;

// uapi/linux/bpf.h
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_SOCKHASH: u32 = 18;
const FN_MAP_LOOKUP_ELEM: i32 = 1;
const FN_GET_SOCKET_COOKIE: i32 = 46;
const FN_SK_REDIRECT_HASH: i32 = 72;
const SK_PASS: i32 = 1;
/// R_BPF_64_64: a 64-bit immediate (ld_imm64) naming a map.
const R_BPF_64_64: u32 = 1;

/// One eBPF instruction: opcode, registers (dst low nibble, src high),
/// offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (src << 4) | dst;
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    b
}

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R6: u8 = 6;
const FP: u8 = 10;

fn mov(dst: u8, src: u8) -> [u8; 8] {
    insn(0xbf, dst, src, 0, 0) // BPF_ALU64 | BPF_MOV | BPF_X
}
fn mov_imm(dst: u8, imm: i32) -> [u8; 8] {
    insn(0xb7, dst, 0, 0, imm) // BPF_ALU64 | BPF_MOV | BPF_K
}
fn add_imm(dst: u8, imm: i32) -> [u8; 8] {
    insn(0x07, dst, 0, 0, imm) // BPF_ALU64 | BPF_ADD | BPF_K
}
fn call(helper: i32) -> [u8; 8] {
    insn(0x85, 0, 0, 0, helper) // BPF_JMP | BPF_CALL
}
fn exit() -> [u8; 8] {
    insn(0x95, 0, 0, 0, 0) // BPF_JMP | BPF_EXIT
}

/// The program's bytes and the instruction indexes of its two map loads
/// (`COUNTERS`, `PEERS`), which the object's relocations name.
fn assemble() -> (Vec<u8>, usize, usize) {
    let mut p: Vec<[u8; 8]> = vec![
        mov(R6, R1),                // r6 = skb
        call(FN_GET_SOCKET_COOKIE), // r0 = cookie(skb->sk)
        insn(0x7b, FP, R0, -8, 0),  // *(u64 *)(fp - 8) = r0 (STX DW)
    ];
    let counters_at = p.len();
    p.push(insn(0x18, R1, 0, 0, 0)); // r1 = &COUNTERS (ld_imm64, 2 slots)
    p.push([0; 8]);
    p.extend([
        mov(R2, FP),
        add_imm(R2, -8),          // r2 = &cookie
        call(FN_MAP_LOOKUP_ELEM), // r0 = &COUNTERS[cookie] or NULL
    ]);
    let jump_at = p.len();
    p.push([0; 8]); // if r0 == 0 goto pass (patched below)
    p.extend([
        insn(0x61, R1, R6, 0, 0), // r1 = skb->len (LDX W, offset 0)
        insn(0xdb, R0, R1, 0, 0), // lock *(u64 *)r0 += r1 (ATOMIC ADD DW)
        mov(R1, R6),              // r1 = skb
    ]);
    let peers_at = p.len();
    p.push(insn(0x18, R2, 0, 0, 0)); // r2 = &PEERS
    p.push([0; 8]);
    p.extend([
        mov(R3, FP),
        add_imm(R3, -8),           // r3 = &cookie
        mov_imm(R4, 0),            // flags: the peer's egress
        call(FN_SK_REDIRECT_HASH), // r0 = SK_PASS, or SK_DROP: no peer
        exit(),
    ]);
    let pass = p.len();
    p.extend([mov_imm(R0, SK_PASS), exit()]);
    let off = i16::try_from(pass - jump_at - 1).expect("short program");
    p[jump_at] = insn(0x15, R0, 0, off, 0); // BPF_JMP | BPF_JEQ | BPF_K
    (p.concat(), counters_at, peers_at)
}

/// A legacy `maps` section entry (struct bpf_map_def's first five words).
fn map_def(kind: u32, key: u32, value: u32, max: u32) -> Vec<u8> {
    [kind, key, value, max, 0]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

fn symbol(
    name: &str,
    value: u64,
    size: u64,
    kind: SymbolKind,
    section: object::write::SectionId,
) -> Symbol {
    Symbol {
        name: name.as_bytes().to_vec(),
        value,
        size,
        kind,
        scope: SymbolScope::Dynamic,
        weak: false,
        section: SymbolSection::Section(section),
        flags: SymbolFlags::None,
    }
}

/// The relocatable ELF object: the program in section
/// `sk_skb/stream_verdict`, its maps in `maps`, the license.
pub fn object() -> Vec<u8> {
    let (code, counters_at, peers_at) = assemble();
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    let text = obj.add_section(vec![], b"sk_skb/stream_verdict".to_vec(), SectionKind::Text);
    obj.append_section_data(text, &code, 8);
    obj.add_symbol(symbol(
        PROGRAM,
        0,
        code.len() as u64,
        SymbolKind::Text,
        text,
    ));
    let maps = obj.add_section(vec![], b"maps".to_vec(), SectionKind::Data);
    let counters = map_def(BPF_MAP_TYPE_HASH, 8, 8, MAX_SOCKETS);
    let peers = map_def(BPF_MAP_TYPE_SOCKHASH, 8, 4, MAX_SOCKETS);
    let at = obj.append_section_data(maps, &counters, 4);
    let counters_sym = obj.add_symbol(symbol(COUNTERS, at, 20, SymbolKind::Data, maps));
    let at = obj.append_section_data(maps, &peers, 4);
    let peers_sym = obj.add_symbol(symbol(PEERS, at, 20, SymbolKind::Data, maps));
    let license = obj.add_section(vec![], b"license".to_vec(), SectionKind::Data);
    obj.append_section_data(license, b"GPL\0", 1);
    for (insn_at, sym) in [(counters_at, counters_sym), (peers_at, peers_sym)] {
        let reloc = Relocation {
            offset: (insn_at * 8) as u64,
            symbol: sym,
            addend: 0,
            flags: RelocationFlags::Elf {
                r_type: R_BPF_64_64,
            },
        };
        obj.add_relocation(text, reloc).expect("relocation");
    }
    obj.write().expect("ELF object")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lookup_miss_jumps_to_the_pass_exit() {
        let (code, c, p) = assemble();
        let insns: Vec<&[u8]> = code.chunks(8).collect();
        assert_eq!((insns[c][0], insns[p][0]), (0x18, 0x18));
        let jump = insns.iter().position(|i| i[0] == 0x15).unwrap();
        let off = i16::from_le_bytes([insns[jump][2], insns[jump][3]]) as usize;
        let target = insns[jump + 1 + off];
        assert_eq!((target[0], target[4]), (0xb7, SK_PASS as u8));
        assert_eq!(insns.last().unwrap()[0], 0x95);
    }
}
