//! [`ExactIndex`]: brute-force search over every stored vector.
//!
//! The reference for [`crate::UsearchIndex`]: exact results, the same score for each
//! metric, so recall can be measured against it and tests can use it as an oracle. Also a
//! reasonable index for a few thousand vectors.
//!
//! File format (all integers little-endian), written atomically by [`VectorIndex::save`]:
//!
//! ```text
//! magic      8 bytes   "TWEXACT1"
//! dimension  u32
//! metric     u8        0 = cosine, 1 = l2, 2 = inner product
//! count      u64
//! count × {  key u64, dimension × f32  }   in increasing key order
//! ```

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use parking_lot::RwLock;

use crate::config::Metric;
use crate::error::IndexError;
use crate::metric::{check_vector, sort_hits};
use crate::persist::write_atomically;
use crate::vector_index::{Hit, VectorIndex};

const MAGIC: &[u8; 8] = b"TWEXACT1";

/// An exact nearest-neighbour index: every search scores every vector.
#[derive(Debug)]
pub struct ExactIndex {
    vectors: RwLock<HashMap<u64, Vec<f32>>>,
    dimension: usize,
    metric: Metric,
}

impl ExactIndex {
    /// An empty index for vectors of `dimension` components.
    pub fn new(dimension: usize, metric: Metric) -> Result<Self, IndexError> {
        if dimension == 0 {
            return Err(IndexError::InvalidConfig {
                field: "dimension",
                reason: "must be at least 1",
            });
        }
        Ok(Self {
            vectors: RwLock::new(HashMap::new()),
            dimension,
            metric,
        })
    }

    /// Loads an index written by [`VectorIndex::save`]; its dimension and metric must be
    /// the ones given. A missing file is an [`IndexError::Io`] of kind `NotFound`.
    pub fn load(path: &Path, dimension: usize, metric: Metric) -> Result<Self, IndexError> {
        let index = Self::new(dimension, metric)?;
        let mut reader = BufReader::new(fs_err::File::open(path)?);
        let corrupt = |reason: &str| IndexError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let mut magic = [0u8; 8];
        read_exact(&mut reader, &mut magic, path)?;
        if &magic != MAGIC {
            return Err(corrupt("not an exact index file (bad magic)"));
        }
        let file_dimension = u32::from_le_bytes(read_array(&mut reader, path)?) as usize;
        let [metric_code] = read_array(&mut reader, path)?;
        let file_metric = metric_from_code(metric_code)
            .ok_or_else(|| corrupt(&format!("unknown metric code {metric_code}")))?;
        if file_dimension != dimension || file_metric != metric {
            return Err(IndexError::IncompatibleFile {
                path: path.to_path_buf(),
                reason: format!(
                    "it holds {file_dimension}-dimensional vectors with metric {file_metric:?}, \
                     {dimension} dimensions with {metric:?} were expected"
                ),
            });
        }
        let count = u64::from_le_bytes(read_array(&mut reader, path)?);
        let mut vectors = HashMap::new();
        let mut record = vec![0u8; 8 + 4 * dimension];
        for _ in 0..count {
            read_exact(&mut reader, &mut record, path)?;
            let (key, values) = record.split_at(8);
            let key = u64::from_le_bytes(key.try_into().map_err(|_| corrupt("short key"))?);
            let vector: Vec<f32> = values
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            check_vector(&vector, dimension, Some(key))
                .map_err(|e| corrupt(&format!("stored vector: {e}")))?;
            if vectors.insert(key, vector).is_some() {
                return Err(corrupt(&format!("key {key} appears twice")));
            }
        }
        let mut rest = [0u8; 1];
        if reader.read(&mut rest)? != 0 {
            return Err(corrupt("data after the last vector"));
        }
        *index.vectors.write() = vectors;
        Ok(index)
    }

    /// The metric the index scores with.
    pub fn metric(&self) -> Metric {
        self.metric
    }
}

impl VectorIndex for ExactIndex {
    fn dimension(&self) -> usize {
        self.dimension
    }

    fn upsert(&self, key: u64, vector: &[f32]) -> Result<(), IndexError> {
        check_vector(vector, self.dimension, Some(key))?;
        self.vectors.write().insert(key, vector.to_vec());
        Ok(())
    }

    fn remove(&self, key: u64) -> Result<bool, IndexError> {
        Ok(self.vectors.write().remove(&key).is_some())
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Result<Vec<Hit>, IndexError> {
        check_vector(query, self.dimension, None)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let vectors = self.vectors.read();
        let mut hits: Vec<Hit> = vectors
            .iter()
            .filter(|(key, _)| filter.is_none_or(|filter| filter(**key)))
            .map(|(&key, vector)| Hit {
                key,
                score: self.metric.score(query, vector),
            })
            .collect();
        if hits.len() > k {
            // Partition around the k-th best first, so that only k hits are sorted.
            hits.select_nth_unstable_by(k - 1, |a, b| {
                b.score.total_cmp(&a.score).then(a.key.cmp(&b.key))
            });
            hits.truncate(k);
        }
        sort_hits(&mut hits);
        Ok(hits)
    }

    fn len(&self) -> usize {
        self.vectors.read().len()
    }

    fn contains(&self, key: u64) -> bool {
        self.vectors.read().contains_key(&key)
    }

    fn save(&self, path: &Path) -> Result<(), IndexError> {
        let vectors = self.vectors.read();
        let mut keys: Vec<u64> = vectors.keys().copied().collect();
        // Sorted, so that the same contents always give the same bytes.
        keys.sort_unstable();
        write_atomically(path, |temporary| {
            let mut writer = BufWriter::new(fs_err::File::create(temporary)?);
            writer.write_all(MAGIC)?;
            let dimension = u32::try_from(self.dimension).map_err(|_| IndexError::Unsupported {
                index: "ExactIndex",
                operation: "saving vectors of more than u32::MAX dimensions",
            })?;
            writer.write_all(&dimension.to_le_bytes())?;
            writer.write_all(&[metric_code(self.metric)])?;
            writer.write_all(&(keys.len() as u64).to_le_bytes())?;
            for key in &keys {
                writer.write_all(&key.to_le_bytes())?;
                for value in &vectors[key] {
                    writer.write_all(&value.to_le_bytes())?;
                }
            }
            writer.flush()?;
            Ok(())
        })
    }
}

fn metric_code(metric: Metric) -> u8 {
    match metric {
        Metric::Cosine => 0,
        Metric::L2 => 1,
        Metric::InnerProduct => 2,
    }
}

fn metric_from_code(code: u8) -> Option<Metric> {
    match code {
        0 => Some(Metric::Cosine),
        1 => Some(Metric::L2),
        2 => Some(Metric::InnerProduct),
        _ => None,
    }
}

/// Reads exactly `buffer.len()` bytes; a short file is corruption, not an I/O failure.
fn read_exact(reader: &mut impl Read, buffer: &mut [u8], path: &Path) -> Result<(), IndexError> {
    reader.read_exact(buffer).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            IndexError::Corrupt {
                path: path.to_path_buf(),
                reason: "file ends early (truncated)".to_string(),
            }
        } else {
            IndexError::Io(e)
        }
    })
}

fn read_array<const N: usize>(reader: &mut impl Read, path: &Path) -> Result<[u8; N], IndexError> {
    let mut buffer = [0u8; N];
    read_exact(reader, &mut buffer, path)?;
    Ok(buffer)
}
