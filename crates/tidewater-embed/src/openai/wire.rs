//! The JSON of `/v1/embeddings`: the request, the response, and the error bodies servers
//! send, turned into vectors in input order or a readable message.

use serde::{Deserialize, Serialize};

/// Request body.
#[derive(Debug, Serialize)]
pub(crate) struct EmbeddingsRequest<'a> {
    pub(crate) model: &'a str,
    pub(crate) input: &'a [String],
}

/// Response body; servers add more fields (`usage`, `object`), which are ignored.
#[derive(Debug, Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Debug, Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
    index: usize,
}

/// Why a 2xx response cannot be used.
#[derive(Debug, PartialEq)]
pub(crate) enum ResponseProblem {
    /// Not an embeddings response: the server or a proxy in front of it misbehaved.
    Malformed(String),
    /// A vector of the wrong length: the server runs another model than configured.
    Dimension { actual: usize },
}

/// Parses a response to a request of `n_inputs` texts into one vector per input, in input
/// order (servers may answer out of order; `index` says which input a vector belongs to).
pub(crate) fn parse_response(
    body: &[u8],
    n_inputs: usize,
    dimension: usize,
) -> Result<Vec<Vec<f32>>, ResponseProblem> {
    let response: EmbeddingsResponse = serde_json::from_slice(body).map_err(|e| {
        ResponseProblem::Malformed(format!(
            "{e}; body: {}",
            excerpt(&String::from_utf8_lossy(body))
        ))
    })?;
    if response.data.len() != n_inputs {
        return Err(ResponseProblem::Malformed(format!(
            "{} vectors for {n_inputs} inputs",
            response.data.len()
        )));
    }
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; n_inputs];
    for item in response.data {
        if item.embedding.len() != dimension {
            return Err(ResponseProblem::Dimension {
                actual: item.embedding.len(),
            });
        }
        match slots.get_mut(item.index) {
            Some(slot @ None) => *slot = Some(item.embedding),
            Some(Some(_)) => {
                return Err(ResponseProblem::Malformed(format!(
                    "index {} appears twice",
                    item.index
                )))
            }
            None => {
                return Err(ResponseProblem::Malformed(format!(
                    "index {} out of range for {n_inputs} inputs",
                    item.index
                )))
            }
        }
    }
    // As many items as inputs, none repeated and all in range: every slot is filled.
    Ok(slots.into_iter().flatten().collect())
}

pub(crate) use tidewater_core::http_error::error_message;
use tidewater_core::http_error::excerpt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_put_in_input_order() {
        let body = br#"{"object":"list","data":[
            {"object":"embedding","embedding":[2.0,2.0],"index":1},
            {"object":"embedding","embedding":[1.0,1.0],"index":0}],"usage":{}}"#;
        assert_eq!(
            parse_response(body, 2, 2).unwrap(),
            vec![vec![1.0, 1.0], vec![2.0, 2.0]]
        );
    }

    #[test]
    fn inconsistent_responses_are_rejected() {
        let dup = br#"{"data":[{"embedding":[1.0],"index":0},{"embedding":[1.0],"index":0}]}"#;
        assert!(matches!(
            parse_response(dup, 2, 1),
            Err(ResponseProblem::Malformed(_))
        ));
        let short = br#"{"data":[{"embedding":[1.0],"index":0}]}"#;
        assert!(matches!(
            parse_response(short, 2, 1),
            Err(ResponseProblem::Malformed(_))
        ));
        let range = br#"{"data":[{"embedding":[1.0],"index":5}]}"#;
        assert!(matches!(
            parse_response(range, 1, 1),
            Err(ResponseProblem::Malformed(_))
        ));
        let dim = br#"{"data":[{"embedding":[1.0,2.0],"index":0}]}"#;
        assert_eq!(
            parse_response(dim, 1, 1),
            Err(ResponseProblem::Dimension { actual: 2 })
        );
        assert!(matches!(
            parse_response(b"<html>bad gateway</html>", 1, 1),
            Err(ResponseProblem::Malformed(m)) if m.contains("bad gateway")
        ));
    }
}
