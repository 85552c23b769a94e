//! Test data shared by the compression integration tests.
#![allow(dead_code)]

/// A small deterministic PRNG (xorshift64*), so tests need no extra dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// WAL-like bytes: 8 KiB pages starting with a PostgreSQL 15 page header (`10 d1 02 00`),
/// filled with repetitive tuple-like records, runs of zeros (page holes of full-page
/// images) and some incompressible bytes, so every codec has real work to do.
pub fn wal_like(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len);
    let mut lsn: u64 = 0x0100_0000;
    while out.len() < len {
        let page_start = out.len();
        out.extend_from_slice(&[0x10, 0xd1, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00]);
        out.extend_from_slice(&lsn.to_le_bytes());
        lsn += 8192;
        while out.len() - page_start < 8192 {
            match rng.below(10) {
                0..=5 => {
                    // A heap tuple: header, a counter, a padded text column.
                    let id = rng.below(100_000) as u32;
                    out.extend_from_slice(&[0x1a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x18, 0x00]);
                    out.extend_from_slice(&id.to_le_bytes());
                    out.extend_from_slice(&(id % 10).to_le_bytes());
                    out.extend_from_slice(b"                                                   ");
                    out.extend_from_slice(&(rng.below(5000) as u32).to_le_bytes());
                }
                6 | 7 => out.extend(std::iter::repeat_n(0u8, 64 + rng.below(512) as usize)),
                _ => {
                    let mut noise = vec![0u8; 16 + rng.below(96) as usize];
                    rng.fill(&mut noise);
                    out.extend_from_slice(&noise);
                }
            }
        }
        out.truncate(page_start + 8192);
    }
    out.truncate(len);
    out
}

/// Incompressible bytes.
pub fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}
