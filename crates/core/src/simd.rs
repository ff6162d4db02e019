//! Runtime dispatch of the hot loops to the best instruction set the CPU has.
//!
//! The loops are written as plain, branch-free Rust over fixed-width chunks, which LLVM
//! vectorises; [`multiversion!`] compiles one copy per x86-64 level (v4: AVX-512, v3: AVX2+FMA,
//! and the baseline) and picks one at run time. Where LLVM vectorises a loop badly, the copies
//! are written in intrinsics instead, keeping the same operations in the same order
//! (`scan::dot_rows`). No fast-math is involved, so every copy computes bit-identical results and
//! profiles stay deterministic across machines.

/// Instruction-set levels the hot loops are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// x86-64-v4 (AVX-512 F/BW/DQ/VL).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    V4,
    /// x86-64-v3 (AVX2, FMA).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    V3,
    /// Whatever the build targets.
    Baseline,
}

/// The best level this CPU supports (detected once).
pub(crate) fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(detect)
}

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        // Every feature a copy is compiled with (see `multiversion!`) must be detected: running
        // code compiled for a missing feature is undefined behaviour.
        let v3 = has!("avx2")
            && has!("fma")
            && has!("bmi1")
            && has!("bmi2")
            && has!("lzcnt")
            && has!("popcnt");
        if v3
            && has!("avx512f")
            && has!("avx512bw")
            && has!("avx512dq")
            && has!("avx512vl")
            && has!("avx512cd")
            && has!("f16c")
            && has!("movbe")
            && has!("xsave")
        {
            return Level::V4;
        }
        if v3 {
            return Level::V3;
        }
    }
    Level::Baseline
}

/// Defines `fn $name(args) -> ret` that runs the `#[inline(always)]` function `$body` compiled
/// for the best available [`Level`].
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:path;) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512cd,avx2,fma,bmi1,bmi2,lzcnt,popcnt,f16c,movbe,xsave")]
                fn v4($($arg: $ty),*) $(-> $ret)? { $body($($arg),*) }
                #[target_feature(enable = "avx2,fma,bmi1,bmi2,lzcnt,popcnt")]
                fn v3($($arg: $ty),*) $(-> $ret)? { $body($($arg),*) }
                match $crate::simd::level() {
                    // SAFETY: the CPU supports the features each copy was compiled for.
                    $crate::simd::Level::V4 => return unsafe { v4($($arg),*) },
                    $crate::simd::Level::V3 => return unsafe { v3($($arg),*) },
                    $crate::simd::Level::Baseline => {}
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// `Σ_k diff(a[k], b[k])²` accumulated in `f64` over 8 fixed lanes: vectorisable, and the
/// summation order (hence the result) is the same in every compiled copy.
#[inline(always)]
pub(crate) fn sum_sq<A: Copy, B: Copy>(a: &[A], b: &[B], diff: impl Fn(A, B) -> f64) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&p, &q)| diff(p, q).powi(2))
        .sum();
    for (p, q) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += diff(p[l], q[l]).powi(2);
        }
    }
    acc.iter().sum::<f64>() + tail
}
