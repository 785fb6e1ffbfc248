//! Pin and area bookkeeping (the `iopt` crate) of one kernel: page pin counts by PFN, the folio
//! tables of its shmem objects and the pinned runs of its `iopt_pages`, all in one object so that
//! pinning a whole area (fault-in, pin counts, run list) is one call, and its map batch another.
//! Objects are named by small integer handles; page numbers cross as numbers (below 2^53).
//! Failures a syscall reports come back as a status (0, or one of the `STATUS_*` errnos below);
//! bad arguments and unknown handles throw. The native bytes it holds (folio tables, counters,
//! run lists) are reported to V8 as they change, as a memory's are.

use std::collections::HashMap;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use iopt::{Error as IoptError, Folios, FrameSource, PagesRuns, PinCounts, Run};

use crate::error::{err, invalid, mem_err, out_of_range, Code};
use crate::memory::{NativeMemory, SharedMem};
use crate::node_api::External;

/// EFAULT: a page beyond the end of its object.
const STATUS_EFAULT: i32 = 1;
/// ENOMEM: no frame left in host memory.
const STATUS_ENOMEM: i32 = 2;
/// EINVAL: a folio adopted at a wrong or taken index.
const STATUS_EINVAL: i32 = 3;

fn status(e: IoptError) -> i32 {
    match e {
        IoptError::Fault => STATUS_EFAULT,
        IoptError::NoMem => STATUS_ENOMEM,
        IoptError::Inval => STATUS_EINVAL,
    }
}

/// The largest page number or count: where an f64 stops being an exact integer.
const PAGE_MAX: f64 = 9_007_199_254_740_991.0;

fn page_arg(v: f64, name: &str) -> Result<u64, Code> {
    if v.fract() != 0.0 || !(0.0..=PAGE_MAX).contains(&v) {
        return Err(out_of_range(name, ">= 0 && <= 2 ** 53 - 1 (an integer)", v));
    }
    Ok(v as u64)
}

/// Frames `[pfn, pfn + n)`, which must lie in the memory: pin counts are kept for its frames only.
fn frames_arg(mem: &SharedMem, pfn: f64, n: f64) -> Result<(u64, u64), Code> {
    let (pfn, n) = (page_arg(pfn, "pfn")?, page_arg(n, "n")?);
    let frames = mem.borrow().size() >> 12;
    if pfn + n > frames {
        return Err(err("ERR_PHYSMEM_RANGE", format!("frames [{pfn}, {}) beyond the memory's {frames}", pfn + n)));
    }
    Ok((pfn, n))
}

/// Frames for fault-in, zeroed, from the kernel's memory; borrowed only when a chunk is empty.
struct Frames<'a>(&'a SharedMem);

impl FrameSource for Frames<'_> {
    fn alloc(&mut self, order: u8) -> std::result::Result<u64, IoptError> {
        // Any allocator failure is "no such block free" to the kernel.
        self.0.borrow_mut().alloc(order, true).map(|pa| pa >> 12).map_err(|_| IoptError::NoMem)
    }
}

/// Objects by handle. Handles are not reused (until the 32-bit count wraps), so a stale one
/// fails instead of reaching another object.
struct Slab<T> {
    items: HashMap<u32, T>,
    next: u32,
}

impl<T> Slab<T> {
    fn new() -> Self {
        Slab { items: HashMap::new(), next: 0 }
    }

    fn insert(&mut self, v: T) -> u32 {
        while self.items.contains_key(&self.next) || self.next > i32::MAX as u32 {
            self.next = if self.next >= i32::MAX as u32 { 0 } else { self.next + 1 };
        }
        let h = self.next;
        self.items.insert(h, v);
        self.next = h.wrapping_add(1);
        h
    }

    fn get(&mut self, h: u32, what: &str) -> Result<&mut T, Code> {
        self.items.get_mut(&h).ok_or_else(|| invalid(format!("no {what} with handle {h}")))
    }

    /// Heap bytes of the table itself.
    fn slot_bytes(&self) -> u64 {
        (self.items.capacity() * (std::mem::size_of::<(u32, T)>() + 1)) as u64
    }

    fn remove(&mut self, h: u32, what: &str) -> Result<T, Code> {
        self.items.remove(&h).ok_or_else(|| invalid(format!("no {what} with handle {h}")))
    }
}

fn f64_array<'e>(env: &'e Env, data: &[f64]) -> Result<Float64ArraySlice<'e>, Code> {
    Float64ArraySlice::copy_from(env, data).map_err(|e| err("ERR_NATIVE_ALLOCATION", format!("cannot create a JavaScript array: {}", e.reason)))
}

// napi-derive reads a literal `&mut [T]` argument as a class reference; through an alias it
// takes the zero-copy typed-array path.
type F64Out<'a> = &'a mut [f64];

/// One kernel's page pin counts, shmem folio tables and `iopt_pages` run lists.
#[napi]
pub struct NativePins {
    mem: SharedMem,
    counts: PinCounts,
    shmem: Slab<Folios>,
    pages: Slab<PagesRuns>,
    /// Scratch for the runs of one pin.
    got: Vec<Run>,
    /// Heap bytes of the shmem objects' and iopt_pages' own data, kept up to date by every call
    /// that changes one; reported to V8 with the rest (see `report`).
    obj_bytes: u64,
    external: External,
}

impl NativePins {
    /// Tells V8 the native bytes held now.
    fn report(&self) {
        let fixed = std::mem::size_of::<Self>() as u64
            + self.counts.heap_bytes()
            + self.shmem.slot_bytes()
            + self.pages.slot_bytes()
            + (self.got.capacity() * std::mem::size_of::<Run>()) as u64;
        self.external.set(fixed + self.obj_bytes);
    }

    /// Runs `op` on shmem object `h` (with the memory and the pin counts), keeping the bytes
    /// reported in step.
    fn with_shmem<R>(&mut self, h: u32, op: impl FnOnce(&mut Folios, &SharedMem, &PinCounts) -> R) -> Result<R, Code> {
        let f = self.shmem.get(h, "shmem object")?;
        let before = f.heap_bytes();
        let r = op(f, &self.mem, &self.counts);
        self.obj_bytes = self.obj_bytes + f.heap_bytes() - before;
        self.report();
        Ok(r)
    }

    /// Frees the folios nobody pins; returns the pinned ones as `(pfn, order)` pairs, which the
    /// caller frees when their last pin goes.
    fn release(&self, folios: &[(u64, u8)]) -> Result<Vec<f64>, Code> {
        let mut pinned = Vec::new();
        for &(pfn, order) in folios {
            if self.counts.count_range(pfn, 1 << order) == 0 {
                self.mem.borrow_mut().free_order(pfn << 12, order).map_err(mem_err)?;
            } else {
                pinned.extend([pfn as f64, order as f64]);
            }
        }
        Ok(pinned)
    }
}

#[napi]
impl NativePins {
    /// Empty bookkeeping over `mem`.
    #[napi(constructor, catch_unwind)]
    pub fn new(env: Env, mem: &NativeMemory) -> Self {
        let external = External::new(&env, 0);
        let pins = NativePins { mem: mem.mem.clone(), counts: PinCounts::new(), shmem: Slab::new(), pages: Slab::new(), got: Vec::new(), obj_bytes: 0, external };
        pins.report();
        pins
    }

    /// Sum of all pin counts.
    #[napi(getter, catch_unwind)]
    pub fn total(&self) -> f64 {
        self.counts.total() as f64
    }

    /// Pins `n` pages from `pfn`.
    #[napi(catch_unwind)]
    pub fn pin(&mut self, pfn: f64, n: f64) -> Result<(), Code> {
        let (pfn, n) = frames_arg(&self.mem, pfn, n)?;
        self.counts.pin(pfn, n);
        self.report();
        Ok(())
    }

    /// Unpins `n` pages from `pfn`.
    #[napi(catch_unwind)]
    pub fn unpin(&mut self, pfn: f64, n: f64) -> Result<(), Code> {
        let (pfn, n) = frames_arg(&self.mem, pfn, n)?;
        self.counts.unpin(pfn, n);
        Ok(())
    }

    /// Pin count of the page at `pfn`.
    #[napi(catch_unwind)]
    pub fn count(&self, pfn: f64) -> Result<f64, Code> {
        Ok(self.counts.count(page_arg(pfn, "pfn")?) as f64)
    }

    /// Sum of the pin counts of `[pfn, pfn + n)`.
    #[napi(catch_unwind)]
    pub fn count_range(&self, pfn: f64, n: f64) -> Result<f64, Code> {
        let (pfn, n) = frames_arg(&self.mem, pfn, n)?;
        Ok(self.counts.count_range(pfn, n) as f64)
    }

    /// A new empty shmem object of `npages` pages (2 MiB folios where they fit when `huge`).
    #[napi(catch_unwind)]
    pub fn shmem_create(&mut self, npages: f64, huge: bool) -> Result<u32, Code> {
        let npages = page_arg(npages, "npages")?;
        let h = self.shmem.insert(Folios::new(npages, huge));
        self.report();
        Ok(h)
    }

    /// Sets the object's size in pages without dropping any (`shmemTruncate` shrinks).
    #[napi(catch_unwind)]
    pub fn shmem_set_size(&mut self, h: u32, npages: f64) -> Result<(), Code> {
        let npages = page_arg(npages, "npages")?;
        self.shmem.get(h, "shmem object")?.set_npages(npages);
        Ok(())
    }

    /// Pages the object holds.
    #[napi(catch_unwind)]
    pub fn shmem_resident(&mut self, h: u32) -> Result<f64, Code> {
        Ok(self.shmem.get(h, "shmem object")?.resident() as f64)
    }

    /// PFN of page `page` (allocated when `alloc`; 0 if absent), or minus a status.
    #[napi(catch_unwind)]
    pub fn shmem_pfn(&mut self, h: u32, page: f64, alloc: bool) -> Result<f64, Code> {
        let page = page_arg(page, "page")?;
        self.with_shmem(h, |f, mem, _| match f.pfn(page, alloc, &mut Frames(mem)) {
            Ok(pfn) => pfn as f64,
            Err(e) => -status(e) as f64,
        })
    }

    /// `(index, pfn, len)` triples of the runs behind pages `[page, page + n)` (faulted in), run
    /// indices from `base`; or the status.
    #[napi(catch_unwind)]
    pub fn shmem_runs<'e>(&mut self, env: &'e Env, h: u32, page: f64, n: f64, base: f64) -> Result<Either<Float64ArraySlice<'e>, i32>, Code> {
        let (page, n, base) = (page_arg(page, "page")?, page_arg(n, "n")?, page_arg(base, "base")?);
        let mut runs = Vec::new();
        if let Err(e) = self.with_shmem(h, |f, mem, _| f.runs(page, n, base, &mut Frames(mem), &mut runs))? {
            return Ok(Either::B(status(e)));
        }
        let flat: Vec<f64> = runs.iter().flat_map(|r| [r.idx as f64, r.pfn as f64, r.len as f64]).collect();
        Ok(Either::A(f64_array(env, &flat)?))
    }

    /// `(index, pfn, order)` triples of the object's folios in index order (every page allocated
    /// first when `alloc`), or the status.
    #[napi(catch_unwind)]
    pub fn shmem_folios<'e>(&mut self, env: &'e Env, h: u32, alloc: bool) -> Result<Either<Float64ArraySlice<'e>, i32>, Code> {
        match self.with_shmem(h, |f, mem, _| f.folios(alloc, &mut Frames(mem)))? {
            Err(e) => Ok(Either::B(status(e))),
            Ok(folios) => {
                let flat: Vec<f64> = folios.iter().flat_map(|f| [f.index as f64, f.pfn as f64, f.order as f64]).collect();
                Ok(Either::A(f64_array(env, &flat)?))
            }
        }
    }

    /// Puts preserved folios at pages `indexes[i]`: the folio of 2^`orders[i]` pages at
    /// `pfns[i]`, in order, in one call (a memfd's folios come back together); the status of
    /// the first that cannot be adopted (those before it stay), else 0.
    #[napi(catch_unwind)]
    pub fn shmem_adopt(&mut self, h: u32, indexes: &[f64], pfns: &[f64], orders: &[u8]) -> Result<i32, Code> {
        if pfns.len() != indexes.len() || orders.len() != indexes.len() {
            return Err(invalid(format!("{} indexes, {} pfns and {} orders", indexes.len(), pfns.len(), orders.len())));
        }
        let folios = indexes
            .iter()
            .zip(pfns)
            .map(|(&index, &pfn)| Ok((page_arg(index, "indexes[i]")?, page_arg(pfn, "pfns[i]")?)))
            .collect::<Result<Vec<_>, Code>>()?;
        self.with_shmem(h, |f, _, _| {
            for (&(index, pfn), &order) in folios.iter().zip(orders) {
                if let Err(e) = f.adopt(index, pfn, order) {
                    return status(e);
                }
            }
            0
        })
    }

    /// Whether any page the object holds is pinned.
    #[napi(catch_unwind)]
    pub fn shmem_any_pinned(&mut self, h: u32) -> Result<bool, Code> {
        let f = self.shmem.get(h, "shmem object")?;
        // Without `alloc` nothing is allocated: it cannot fail.
        let folios = f.folios(false, &mut Frames(&self.mem)).unwrap_or_default();
        Ok(folios.iter().any(|f| self.counts.count_range(f.pfn, 1 << f.order) != 0))
    }

    /// Drops the pages at and beyond `npages` (ftruncate down). Returns the `(pfn, order)` pairs
    /// of the folios dropped while pinned: the caller frees them when their last pin goes.
    #[napi(catch_unwind)]
    pub fn shmem_truncate<'e>(&mut self, env: &'e Env, h: u32, npages: f64) -> Result<Float64ArraySlice<'e>, Code> {
        let npages = page_arg(npages, "npages")?;
        let t = self.with_shmem(h, |f, _, counts| f.truncate(npages, |pfn, n| counts.count_range(pfn, n) != 0))?;
        if let Some((pfn, n)) = t.zero {
            self.mem.borrow_mut().fill_range(pfn << 12, n << 12, 0).map_err(mem_err)?;
        }
        if let Some((pfn, n)) = t.free {
            self.mem.borrow_mut().free(pfn << 12, n << 12).map_err(mem_err)?;
        }
        let pinned = self.release(&t.release)?;
        f64_array(env, &pinned)
    }

    /// The object's last user went: its folios are freed (the handle with them). Returns the
    /// `(pfn, order)` pairs still pinned, which the caller frees when their last pin goes.
    #[napi(catch_unwind)]
    pub fn shmem_release<'e>(&mut self, env: &'e Env, h: u32) -> Result<Float64ArraySlice<'e>, Code> {
        let mut f = self.shmem.remove(h, "shmem object")?;
        self.obj_bytes -= f.heap_bytes();
        let folios = f.take_all();
        self.report();
        let pinned = self.release(&folios)?;
        f64_array(env, &pinned)
    }

    /// `(first, last)` pairs of the pieces of `[first, last]` no user pins yet.
    #[napi(catch_unwind)]
    pub fn pages_holes<'e>(&mut self, env: &'e Env, h: u32, first: f64, last: f64) -> Result<Float64ArraySlice<'e>, Code> {
        let (first, last) = (page_arg(first, "first")?, page_arg(last, "last")?);
        let holes = self.pages.get(h, "iopt_pages")?.holes(first, last);
        let flat: Vec<f64> = holes.iter().flat_map(|&(a, b)| [a as f64, b as f64]).collect();
        f64_array(env, &flat)
    }

    /// One more user of page indices `[first, last]` of `iopt_pages` `h` (-1: a new one, with
    /// nothing pinned yet). The holes (see `pagesHoles`) are given as `(index, handle, start, n)`
    /// quadruples in index order: `n` pages from page `start` of the shmem object `handle`
    /// (faulted in), or with handle -1 the PFNs `start` onwards. All or nothing: returns the
    /// `iopt_pages`' handle, or minus a status with nothing pinned (and no new handle).
    #[napi(catch_unwind)]
    pub fn pages_pin(&mut self, h: i32, first: f64, last: f64, segs: &[f64]) -> Result<i32, Code> {
        let (first, last) = (page_arg(first, "first")?, page_arg(last, "last")?);
        if !segs.len().is_multiple_of(4) {
            return Err(invalid(format!("segs must hold (index, handle, start, n) quadruples (length {})", segs.len())));
        }
        if h < -1 || (h >= 0 && self.pages.get(h as u32, "iopt_pages").is_err()) {
            return Err(invalid(format!("no iopt_pages with handle {h}")));
        }
        let mut got = std::mem::take(&mut self.got);
        got.clear();
        // The array's contents: ERR_INVALID_ARG_VALUE (a range error is for an argument itself).
        let seg = |v: f64, name: &str| page_arg(v, name).map_err(|_| invalid(format!("segs: {name} {v} is not an integer in [0, 2 ** 53 - 1]")));
        for q in segs.chunks_exact(4) {
            let (idx, start, n) = (seg(q[0], "index")?, seg(q[2], "start")?, seg(q[3], "n")?);
            if q[1] == -1.0 {
                let (pfn, n) = frames_arg(&self.mem, q[2], q[3])?;
                got.push(Run { idx, pfn, len: n });
                continue;
            }
            let handle = u32::try_from(seg(q[1], "handle")?).map_err(|_| invalid(format!("segs: no shmem object with handle {}", q[1])))?;
            if let Err(e) = self.with_shmem(handle, |f, mem, _| f.runs(start, n, idx, &mut Frames(mem), &mut got))? {
                self.got = got;
                return Ok(-status(e));
            }
        }
        let h = if h < 0 { self.pages.insert(PagesRuns::new()) } else { h as u32 };
        let pages = self.pages.get(h, "iopt_pages")?;
        let before = pages.heap_bytes();
        pages.pin(first, last, &got, &mut self.counts);
        self.obj_bytes = self.obj_bytes + pages.heap_bytes() - before;
        self.got = got;
        self.report();
        Ok(h as i32)
    }

    /// One user of `[first, last]` fewer; returns how many pages lost their pin. An `iopt_pages`
    /// left with nothing pinned is forgotten (its handle with it): the next pin makes a new one.
    #[napi(catch_unwind)]
    pub fn pages_unpin(&mut self, h: u32, first: f64, last: f64) -> Result<f64, Code> {
        let (first, last) = (page_arg(first, "first")?, page_arg(last, "last")?);
        let pages = self.pages.get(h, "iopt_pages")?;
        let before = pages.heap_bytes();
        let dropped = pages.unpin(first, last, &mut self.counts);
        let (after, empty) = (pages.heap_bytes(), pages.npinned() == 0);
        self.obj_bytes = self.obj_bytes + after - before;
        if empty {
            self.obj_bytes -= self.pages.remove(h, "iopt_pages")?.heap_bytes();
        }
        self.report();
        Ok(dropped as f64)
    }

    /// Writes the map batch of pinned page indices `[first, last]` at IOVA page `iovaPfn` onwards
    /// (one entry per run, or per page when `small`) into `iovaPfns`, `pfns` and `npages`, as
    /// `mapRuns` takes it. Returns the entries; if more than the arrays hold, writes nothing.
    #[napi(catch_unwind)]
    #[allow(clippy::too_many_arguments)]
    pub fn pages_batch(&mut self, h: u32, first: f64, last: f64, iova_pfn: f64, small: bool, iova_pfns: F64Out, pfns: F64Out, npages: F64Out) -> Result<f64, Code> {
        let (first, last, iova_pfn) = (page_arg(first, "first")?, page_arg(last, "last")?, page_arg(iova_pfn, "iovaPfn")?);
        let pages = self.pages.get(h, "iopt_pages")?;
        let need = pages.batch_len(first, last, small);
        let cap = iova_pfns.len().min(pfns.len()).min(npages.len()) as u64;
        if need <= cap {
            let mut k = 0;
            pages.batch(first, last, iova_pfn, small, |a, p, n| {
                iova_pfns[k] = a as f64;
                pfns[k] = p as f64;
                npages[k] = n as f64;
                k += 1;
            });
        }
        Ok(need as f64)
    }
}
