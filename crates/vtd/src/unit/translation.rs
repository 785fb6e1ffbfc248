//! DMA remapping (VT-d spec chapter 3): a request's context (context cache, else root and
//! context tables), then the IOTLB, else the second-level walk resumed from the
//! paging-structure cache. Checks run in QEMU's order (`vtd_do_iommu_translate`).
use physmem::{DmaRead, PhysMem};

use super::Unit;
use crate::cache::{key, CachedContext, Probe};
use crate::entry::*;
use crate::fault::FaultReason;
use crate::regs::*;

const INTERRUPT_FIRST: u64 = 0xfee0_0000;
const INTERRUPT_LAST: u64 = 0xfeef_ffff;

/// How the IOTLB answered a translation.
#[derive(Clone, Copy)]
enum Lookup {
    /// Not asked: the request faulted before (beyond the address width).
    None,
    Hit,
    /// Missed: a walk followed.
    Miss,
}

/// What the translation path needs from the context of one requester.
enum Route {
    /// TE off or TT = pass-through: the address is the physical address.
    Identity,
    /// Translate through the domain's second-level tables.
    Translate(CachedContext),
}

impl Unit {
    /// Resolves the requester's context: the context cache, else the root and context tables in
    /// QEMU's check order. A fault carries the FPD bit of the context entry if one was read.
    fn route(&mut self, mem: &PhysMem, sid: u16) -> std::result::Result<Route, (FaultReason, bool)> {
        if self.gsts & GSTS_TES == 0 {
            return Ok(Route::Identity);
        }
        let ctx = match self.ctx.get(sid) {
            Some(c) => {
                self.stats.context_hits += 1;
                c
            }
            None => {
                self.stats.context_misses += 1;
                let c = self.read_context(mem, sid)?;
                self.ctx.insert(sid, c);
                c
            }
        };
        Ok(match ctx.tt {
            TranslationType::PassThrough => Route::Identity,
            _ => Route::Translate(ctx),
        })
    }

    fn read_context(&self, mem: &PhysMem, sid: u16) -> std::result::Result<CachedContext, (FaultReason, bool)> {
        let re_pa = self.root + ((sid >> 8) as u64) * 16;
        let (Some(re_lo), Some(re_hi)) = (mem.dma_read_u64(re_pa), mem.dma_read_u64(re_pa + 8)) else {
            return Err((FaultReason::RootTableInv, false));
        };
        let re = RootEntry { lo: re_lo, hi: re_hi };
        if !re.present() {
            return Err((FaultReason::RootEntryP, false));
        }
        if re.lo & root_rsvd_lo(self.haw) != 0 || re.hi != 0 {
            return Err((FaultReason::RootEntryRsvd, false));
        }
        let ce_pa = re.ctp() + ((sid & 0xff) as u64) * 16;
        let (Some(ce_lo), Some(ce_hi)) = (mem.dma_read_u64(ce_pa), mem.dma_read_u64(ce_pa + 8)) else {
            return Err((FaultReason::ContextTableInv, false));
        };
        let ce = ContextEntry { lo: ce_lo, hi: ce_hi };
        let fpd = ce.fpd();
        if !ce.present() {
            return Err((FaultReason::ContextEntryP, fpd));
        }
        if ce.lo & context_rsvd_lo(self.haw) != 0 || ce.hi & CONTEXT_RSVD_HI != 0 {
            return Err((FaultReason::ContextEntryRsvd, fpd));
        }
        let levels = ce.aw() as u32 + 2;
        if !self.supports_levels(levels) {
            return Err((FaultReason::ContextEntryInv, fpd));
        }
        let tt_ok = match ce.tt() {
            TranslationType::MultiLevel => true,
            TranslationType::DeviceTlb => self.config.device_tlb,
            TranslationType::PassThrough => self.config.pass_through,
            TranslationType::Reserved => false,
        };
        if !tt_ok {
            return Err((FaultReason::ContextEntryInv, fpd));
        }
        Ok(CachedContext { did: ce.did(), slptptr: ce.slptptr(), levels, tt: ce.tt(), fpd })
    }

    /// Translates one DMA request from requester `sid`. `Err` is the fault reason; the fault is
    /// recorded (unless FPD or the log's policy drops it) and counted.
    pub fn translate(&mut self, mem: &PhysMem, sid: u16, iova: u64, write: bool) -> std::result::Result<u64, FaultReason> {
        match self.route(mem, sid) {
            Ok(Route::Identity) => {
                self.stats.passthrough += 1;
                Ok(iova)
            }
            Ok(Route::Translate(ctx)) => {
                let (r, looked) = self.translate_in(mem, sid, &ctx, iova, write);
                self.count(looked, 1);
                r
            }
            Err((reason, fpd)) => {
                self.fault(sid, iova, reason, write, fpd);
                Err(reason)
            }
        }
    }

    /// Translates a batch of requests from one requester: `out[i]` gets the physical address
    /// of `iovas[i]` or `u64::MAX`, and `reasons[i]` (when given) the fault reason or 0.
    /// Returns how many faulted. The context is resolved once, as the batch is one burst.
    // Never inlined: the N-API binding and the native benches then run one compiled loop.
    #[inline(never)]
    pub fn translate_batch(
        &mut self,
        mem: &PhysMem,
        sid: u16,
        iovas: &[u64],
        out: &mut [u64],
        write: bool,
        mut reasons: Option<&mut [u8]>,
    ) -> usize {
        let n = iovas.len().min(out.len());
        let (iovas, out) = (&iovas[..n], &mut out[..n]);
        if let Some(rs) = reasons.as_deref_mut() {
            let m = n.min(rs.len());
            rs[..m].fill(0);
        }
        let mut faulted = 0;
        let mut failed = |i: usize, reason: FaultReason, out: &mut [u64]| {
            faulted += 1;
            out[i] = u64::MAX;
            if let Some(slot) = reasons.as_deref_mut().and_then(|rs| rs.get_mut(i)) {
                *slot = reason as u8;
            }
        };
        match self.route(mem, sid) {
            Ok(Route::Identity) => {
                self.stats.passthrough += n as u64;
                out.copy_from_slice(iovas);
            }
            Ok(Route::Translate(ctx)) => match mem.flat_reader() {
                Some(rd) => self.translate_run(&rd, sid, &ctx, iovas, out, write, &mut failed),
                None => self.translate_run(mem, sid, &ctx, iovas, out, write, &mut failed),
            },
            Err((reason, fpd)) => {
                for (i, &iova) in iovas.iter().enumerate() {
                    self.fault(sid, iova, reason, write, fpd);
                    failed(i, reason, out);
                }
            }
        }
        faulted
    }

    /// The batch through the domain of `ctx`, read through `rd` (one loop per kind of memory).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn translate_run<R: DmaRead>(
        &mut self,
        rd: &R,
        sid: u16,
        ctx: &CachedContext,
        iovas: &[u64],
        out: &mut [u64],
        write: bool,
        failed: &mut impl FnMut(usize, FaultReason, &mut [u64]),
    ) {
        let n = iovas.len();
        let need = if write { SL_W as u8 } else { SL_R as u8 };
        // Bits an IOVA must not set (beyond the domain's and the unit's address width).
        let beyond = !0u64 << levels_to_width(ctx.levels).min(self.config.address_width);
        // Counted here, not in the unit's stats: the loop keeps the counts in registers.
        let (mut hits, mut misses) = (0, 0);
        let mut i = 0;
        while i < n {
            // Hits, with the IOTLB's arrays and clock in registers.
            let kinds = self.iotlb.kinds();
            let mut probe = self.iotlb.probe();
            let mut missed = false;
            let from = i;
            while i < n {
                let iova = iovas[i];
                if iova & beyond != 0 {
                    break;
                }
                match iotlb_lookup(&mut probe, kinds, ctx.did, iova) {
                    Some((pa, perm)) if perm & need != 0 => out[i] = pa,
                    Some(_) => break,
                    None => {
                        missed = true;
                        break;
                    }
                }
                i += 1;
            }
            // Each request the loop passed was a hit.
            hits += (i - from) as u64;
            drop(probe);
            if i == n {
                break;
            }
            if !missed {
                // Beyond the width, or denied by its entry: the fault.
                let (r, looked) = self.translate_in(rd, sid, ctx, iovas[i], write);
                self.count(looked, 1);
                match r {
                    Ok(pa) => out[i] = pa,
                    Err(reason) => failed(i, reason, out),
                }
                i += 1;
                continue;
            }
            // Misses walk, and go on walking without a probe while the IOTLB holds nothing
            // (it is off, or every walk faulted).
            loop {
                misses += 1;
                match self.miss(rd, sid, ctx, iovas[i], write) {
                    Ok(pa) => out[i] = pa,
                    Err(reason) => failed(i, reason, out),
                }
                i += 1;
                if i == n || self.iotlb.kinds() != 0 || iovas[i] & beyond != 0 {
                    break;
                }
            }
        }
        self.count(Lookup::Hit, hits);
        self.count(Lookup::Miss, misses);
    }

    /// Adds `n` lookups of one outcome to the stats.
    #[inline(always)]
    fn count(&mut self, looked: Lookup, n: u64) {
        match looked {
            Lookup::Hit => self.stats.iotlb_hits += n,
            Lookup::Miss => {
                self.stats.iotlb_misses += n;
                self.stats.walks += n;
            }
            Lookup::None => {}
        }
    }

    /// One translation through the domain: the IOTLB, else a walk. Returns how the IOTLB
    /// answered (the caller counts it).
    // Always inlined: in the cdylib LTO otherwise keeps these out of the batch loop (+3 ns a hit).
    #[inline(always)]
    fn translate_in<R: DmaRead>(&mut self, rd: &R, sid: u16, ctx: &CachedContext, iova: u64, write: bool) -> (std::result::Result<u64, FaultReason>, Lookup) {
        let need = if write { SL_W as u8 } else { SL_R as u8 };
        let width = levels_to_width(ctx.levels).min(self.config.address_width);
        if iova >> width != 0 {
            self.fault(sid, iova, FaultReason::AddrBeyondMgaw, write, ctx.fpd);
            return (Err(FaultReason::AddrBeyondMgaw), Lookup::None);
        }
        let kinds = self.iotlb.kinds();
        let found = iotlb_lookup(&mut self.iotlb.probe(), kinds, ctx.did, iova);
        if let Some((pa, perm)) = found {
            if perm & need == 0 {
                let deny = if write { FaultReason::Write } else { FaultReason::Read };
                self.fault(sid, iova, deny, write, ctx.fpd);
                return (Err(deny), Lookup::Hit);
            }
            return (Ok(pa), Lookup::Hit);
        }
        (self.miss(rd, sid, ctx, iova, write), Lookup::Miss)
    }

    /// An IOTLB miss (the caller counts it): the walk, its IOTLB fill, or its fault.
    #[inline(always)]
    fn miss<R: DmaRead>(&mut self, rd: &R, sid: u16, ctx: &CachedContext, iova: u64, write: bool) -> std::result::Result<u64, FaultReason> {
        match self.walk(rd, ctx, iova, write) {
            Ok(pa) => Ok(pa),
            Err(reason) => {
                self.fault(sid, iova, reason, write, ctx.fpd);
                Err(reason)
            }
        }
    }

    /// The second-level walk of QEMU's `vtd_iova_to_slpte`, resumed below the top when the
    /// paging-structure cache holds a non-leaf entry. Returns the translation, which the IOTLB
    /// keeps.
    #[inline(always)]
    fn walk<R: DmaRead>(&mut self, rd: &R, ctx: &CachedContext, iova: u64, write: bool) -> std::result::Result<u64, FaultReason> {
        let w = WalkReq {
            ctx,
            iova,
            need: if write { SL_W as u8 } else { SL_R as u8 },
            deny: if write { FaultReason::Write } else { FaultReason::Read },
            psc_on: self.psc.enabled(),
        };
        let mut level = ctx.levels;
        let mut table = ctx.slptptr;
        let mut perm = (SL_R | SL_W) as u8;
        // Lowest level first: the deepest cached entry resumes the walk. Each level with its own
        // constant shift.
        let kinds = self.psc.kinds() & ((1 << (ctx.levels - 1)) - 1);
        for l in 2..if kinds == 0 { 2 } else { 6 } {
            if kinds & (1 << (l - 2)) == 0 {
                continue;
            }
            if let Some((next, p)) = self.psc.lookup(key(ctx.did, l - 2, iova >> level_shift(l))) {
                self.stats.psc_hits += 1;
                if p & w.need == 0 {
                    return Err(w.deny);
                }
                level = l - 1;
                table = next;
                perm = p;
                break;
            }
        }
        if level == ctx.levels {
            // From the top: the levels are known, so each is a step of its own (no loop, the
            // shifts and masks constants).
            return match level {
                4 => self.walk_levels::<R, 4>(rd, &w, table, perm),
                3 => self.walk_levels::<R, 3>(rd, &w, table, perm),
                5 => self.walk_levels::<R, 5>(rd, &w, table, perm),
                _ => self.walk_down(rd, &w, level, table, perm),
            };
        }
        self.walk_down(rd, &w, level, table, perm)
    }

    /// [`walk_down`](Self::walk_down) from the top of an `L`-level table, unrolled.
    #[inline(always)]
    fn walk_levels<R: DmaRead, const L: u32>(&mut self, rd: &R, w: &WalkReq<'_>, mut table: u64, mut perm: u8) -> std::result::Result<u64, FaultReason> {
        for k in 0..L {
            match self.step(rd, w, L - k, table, &mut perm)? {
                Step::Table(t) => table = t,
                Step::Leaf(addr) => return Ok(self.leaf(w, addr, L - k, perm)),
            }
        }
        self.walk_down(rd, w, 0, table, perm)
    }

    /// The walk from `table` at `level` down to a leaf.
    #[inline(always)]
    fn walk_down<R: DmaRead>(&mut self, rd: &R, w: &WalkReq<'_>, mut level: u32, mut table: u64, mut perm: u8) -> std::result::Result<u64, FaultReason> {
        loop {
            match self.step(rd, w, level, table, &mut perm)? {
                Step::Table(t) => table = t,
                Step::Leaf(addr) => return Ok(self.leaf(w, addr, level, perm)),
            }
            level -= 1;
        }
    }

    /// A walk's end: the leaf at `level` mapping page `base` with `perm` goes into the IOTLB;
    /// returns the translation.
    #[inline(always)]
    fn leaf(&mut self, w: &WalkReq<'_>, base: u64, level: u32, perm: u8) -> u64 {
        let shift = level_shift(level);
        self.iotlb.insert(key(w.ctx.did, level - 1, w.iova >> shift), base, perm);
        base | (w.iova & ((1u64 << shift) - 1))
    }

    /// One entry of a walk: the table it points at (cached in the PSC), its leaf, or the fault.
    /// `perm` accumulates the entries' R|W.
    #[inline(always)]
    fn step<R: DmaRead>(&mut self, rd: &R, w: &WalkReq<'_>, level: u32, table: u64, perm: &mut u8) -> std::result::Result<Step, FaultReason> {
        let shift = level_shift(level);
        let at = table + 8 * ((w.iova >> shift) & 0x1ff);
        let Some(mut pte) = rd.dma_peek_u64(at) else {
            return Err(if level == w.ctx.levels { FaultReason::ContextEntryInv } else { FaultReason::PagingEntryInv });
        };
        if pte as u8 & w.need == 0 {
            // Refused, or a frame without data peeked as 0: its true word decides.
            pte = rd.dma_read_u64(at).unwrap_or(0);
            if pte as u8 & w.need == 0 {
                return Err(w.deny);
            }
        }
        *perm &= (pte & (SL_R | SL_W)) as u8;
        // rsvd.mask and slpte_is_leaf by table, without branches on the level.
        let kind = slpte_kind(pte, level);
        if pte & self.rsvd_by_kind[kind] != 0 {
            return Err(FaultReason::PagingEntryRsvd);
        }
        // slpte_addr with the unit's mask computed once.
        let addr = pte & self.addr_mask;
        if SLPTE_LEAF_KINDS >> kind & 1 != 0 {
            let last = addr + (level_size(level) - 1);
            if !(addr > INTERRUPT_LAST || last < INTERRUPT_FIRST) {
                return Err(FaultReason::InterruptAddr);
            }
            return Ok(Step::Leaf(addr));
        }
        if w.psc_on {
            self.psc.insert_entry(key(w.ctx.did, level - 2, w.iova >> shift), addr, *perm);
        }
        Ok(Step::Table(addr))
    }
}

/// One walk's request: what each of its steps needs.
struct WalkReq<'a> {
    ctx: &'a CachedContext,
    iova: u64,
    /// The R or W bit the request needs in every entry.
    need: u8,
    /// Its fault when an entry lacks it.
    deny: FaultReason,
    /// Whether the paging-structure cache takes entries (read once per walk).
    psc_on: bool,
}

/// Where one entry of a walk leads.
enum Step {
    /// A table one level down.
    Table(u64),
    /// The leaf's page address.
    Leaf(u64),
}

/// The IOTLB's translation of `iova` in domain `did` and the entry's permission: one probe per
/// page size that has entries (`kinds`; none at all: no probe).
#[inline(always)]
fn iotlb_lookup(probe: &mut Probe<'_>, kinds: u32, did: u16, iova: u64) -> Option<(u64, u8)> {
    // Each page size with its own constant shift (a shift by a register costs more).
    for kind in 0..3 {
        if kinds & (1 << kind) == 0 {
            continue;
        }
        let shift = 12 + 9 * kind;
        if let Some((base, perm)) = probe.lookup(key(did, kind, iova >> shift)) {
            return Some((base | (iova & ((1u64 << shift) - 1)), perm));
        }
    }
    None
}
