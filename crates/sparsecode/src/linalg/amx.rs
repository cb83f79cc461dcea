//! The bfloat16 encoder product of [`super::bf16`] on Intel AMX tiles (`tdpbf16ps`), where the
//! CPU has AMX-BF16 and Linux grants the process the tile state.
//!
//! Same inputs, same kind of arithmetic: products of bfloat16 pairs, exact in f32, summed in f32
//! with denormal inputs read as zero and denormal sums flushed; only the order of the additions
//! differs from the AVX512_BF16 kernel, and the error bound of [`super::bf16`] holds for any
//! order. One `tdpbf16ps` multiplies a 16 x 32 tile of bfloat16 by a 32 x 16 one (8,192
//! multiply-adds) where `vdpbf16ps` does 32.
//!
//! Rust has no stable AMX intrinsics, so the instructions are inline assembly on fixed tile
//! registers: `tmm0..tmm3` accumulate a 32 x 32 block of `C`, `tmm4`/`tmm5` hold 32 rows of `X`
//! and `tmm6`/`tmm7` the two 16-latent halves of a panel of [`super::bf16::PackedRows`], whose
//! `[pair][32 latents][2]` layout is already AMX's pair-interleaved ("VNNI") form with a row
//! stride of 128 bytes. The product runs here when the pairs of columns are a multiple of 16 (a
//! whole tile deep); rows past the last 32 and latents past the last panel's width go through
//! edge handling below.

use super::bf16::{PackedRows, NR};

/// Rows of `X` per block of four accumulator tiles.
const BLOCK_ROWS: usize = 32;
/// Column pairs per tile (64 bytes of bfloat16 pairs).
const TILE_PAIRS: usize = 16;

/// Whether this CPU has AMX-BF16 and the kernel granted this process the tile data state
/// (asked once; later calls return the first answer).
pub fn available() -> bool {
    static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GRANTED.get_or_init(request)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request() -> bool {
    // CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
    let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
    if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
        return false;
    }
    const SYS_ARCH_PRCTL: usize = 158;
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    let ret: isize;
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) only asks the kernel to allow the tile
    // state for this process; it touches no memory of ours. The syscall clobbers rcx and r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ret == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request() -> bool {
    false
}

/// Whether [`block`] takes a product of `pairs` column pairs.
pub fn fits(pairs: usize) -> bool {
    pairs > 0 && pairs.is_multiple_of(TILE_PAIRS)
}

/// The palette-1 tile configuration: eight tiles of 16 rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1; // palette 1
        for t in 0..8 {
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
            c[48 + t] = 16;
        }
        TileConfig(c)
    }
}

/// `c[r][j] = Σ x̂[r] ŵ[j]` for the first `rows - rows % 32` rows of `x` (packed `[rows][pairs
/// * 2]`), every latent of `w`, into `c` (row stride `w.rows`); returns how many rows it did
/// (the rest is the caller's). Panics unless [`available`] and [`fits`]`(pairs)`.
pub fn block(c: &mut [f32], x: &[u16], w: &PackedRows, pairs: usize) -> usize {
    assert!(
        available() && fits(pairs),
        "amx::block: no AMX or a partial tile depth"
    );
    let n = w.rows;
    let rows = x.len() / (pairs * 2);
    let done = rows - rows % BLOCK_ROWS;
    assert!(c.len() >= rows * n && w.data.len() >= n.div_ceil(NR) * pairs * NR * 2);
    if done == 0 || n == 0 {
        return done;
    }
    // SAFETY: the CPU has AMX-BF16 and the process holds the tile state (`available`); `tiles`
    // slices every tile's rows out of `x`, `w` and `c` (bounds-checked) before `panel_rows`
    // reads or writes them.
    unsafe { tiles(c, x, w, pairs, done) };
    done
}

#[cfg(target_arch = "x86_64")]
unsafe fn tiles(c: &mut [f32], x: &[u16], w: &PackedRows, pairs: usize, rows: usize) {
    use std::arch::asm;
    let cfg = TileConfig::new();
    // SAFETY: a valid palette-1 configuration (8 tiles of 16 x 64 bytes).
    unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack)) };
    let n = w.rows;
    let panel_len = pairs * NR * 2;
    let mut edge = [0.0f32; BLOCK_ROWS * NR];
    for p in 0..n.div_ceil(NR) {
        let panel = &w.data[p * panel_len..(p + 1) * panel_len];
        let width = NR.min(n - p * NR);
        for r0 in (0..rows).step_by(BLOCK_ROWS) {
            let xs = &x[r0 * pairs * 2..(r0 + BLOCK_ROWS) * pairs * 2];
            if width == NR {
                let out = &mut c[r0 * n + p * NR..];
                assert!(out.len() > (BLOCK_ROWS - 1) * n + NR - 1);
                // SAFETY: `xs` holds 32 rows of `pairs` pairs, `panel` `pairs` rows of 128
                // bytes, and `out` 32 rows of `n` floats of which 32 columns are written.
                unsafe { panel_rows(out.as_mut_ptr(), n, xs, panel, pairs) };
            } else {
                // SAFETY: as above, into `edge` (32 rows of 32 floats); then copied by width.
                unsafe { panel_rows(edge.as_mut_ptr(), NR, xs, panel, pairs) };
                for (r, row) in edge.chunks_exact(NR).enumerate() {
                    let at = (r0 + r) * n + p * NR;
                    c[at..at + width].copy_from_slice(&row[..width]);
                }
            }
        }
    }
    // SAFETY: releases the tile state this function configured.
    unsafe { asm!("tilerelease", options(nostack)) };
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tiles(_: &mut [f32], _: &[u16], _: &PackedRows, _: usize, _: usize) {
    unreachable!("amx::block asserts AMX")
}

/// One 32 x 32 block: 32 rows of `x` (row stride `pairs` pairs) against one panel, into `out`
/// (row stride `stride` floats). Tiles: C in tmm0 (rows 0-15, latents 0-15), tmm1 (rows 0-15,
/// latents 16-31), tmm2, tmm3 (rows 16-31); A in tmm4, tmm5; B in tmm6, tmm7.
///
/// # Safety
/// The tile configuration of [`tiles`] is loaded; `x` holds 32 rows of `pairs` pairs, `panel`
/// `pairs` rows of 64 bfloat16, `out` 32 rows of `stride >= 32` floats.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn panel_rows(out: *mut f32, stride: usize, x: &[u16], panel: &[u16], pairs: usize) {
    use std::arch::asm;
    debug_assert!(x.len() >= BLOCK_ROWS * pairs * 2 && panel.len() >= pairs * NR * 2);
    let (xs, ws, cs) = (pairs * 4, NR * 4, stride * 4); // row strides in bytes
    let (xp, wp) = (x.as_ptr() as *const u8, panel.as_ptr() as *const u8);
    // SAFETY (every block): tile loads read 16 rows of 64 bytes from inside `x` and `panel`
    // (q0 + 16 <= pairs), stores write 16 rows of 64 bytes inside `out`'s 32 rows.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack)
        );
        for q0 in (0..pairs).step_by(TILE_PAIRS) {
            let a = xp.add(q0 * 4);
            let b = wp.add(q0 * ws);
            asm!(
                "tileloadd tmm4, [{a0} + {xs}*1]",
                "tileloadd tmm5, [{a1} + {xs}*1]",
                "tileloadd tmm6, [{b0} + {ws}*1]",
                "tileloadd tmm7, [{b1} + {ws}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a,
                a1 = in(reg) a.add(16 * xs),
                b0 = in(reg) b,
                b1 = in(reg) b.add(64),
                xs = in(reg) xs,
                ws = in(reg) ws,
                options(nostack, readonly)
            );
        }
        let o = out as *mut u8;
        asm!(
            "tilestored [{c0} + {cs}*1], tmm0",
            "tilestored [{c1} + {cs}*1], tmm1",
            "tilestored [{c2} + {cs}*1], tmm2",
            "tilestored [{c3} + {cs}*1], tmm3",
            c0 = in(reg) o,
            c1 = in(reg) o.add(64),
            c2 = in(reg) o.add(16 * cs),
            c3 = in(reg) o.add(16 * cs + 64),
            cs = in(reg) cs,
            options(nostack)
        );
    }
}
