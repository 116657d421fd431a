//! How a byte stream is cut into the pieces a driver hands over: one
//! schedule per run, so a target can check that a sans-IO core gives the
//! same result whatever the cuts.

/// A schedule of piece sizes.
#[derive(Clone, Copy, Debug)]
pub enum Schedule {
    /// As much as the core asks for at once.
    Whole,
    /// Sizes from 1 to 16 drawn from a generator seeded by the input, so
    /// the same input always gives the same cuts (and a crash reproduces).
    Drawn(u64),
}

impl Schedule {
    /// A `Drawn` schedule seeded from `data` (FNV-1a).
    pub fn drawn_from(data: &[u8]) -> Schedule {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Schedule::Drawn(h | 1)
    }

    /// The size of the next piece, at most `room` (which is not zero).
    pub fn next(&mut self, room: usize) -> usize {
        match self {
            Schedule::Whole => room,
            Schedule::Drawn(s) => {
                // xorshift64
                *s ^= *s << 13;
                *s ^= *s >> 7;
                *s ^= *s << 17;
                ((*s % 16) as usize + 1).min(room)
            }
        }
    }
}
