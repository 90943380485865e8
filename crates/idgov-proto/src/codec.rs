//! The gRPC codec of the idgov.v1 API: prost's, except that a message that
//! does not decode (malformed protobuf, a string that is not UTF-8) is the
//! caller's bad input, `INVALID_ARGUMENT`, not the server's `INTERNAL`.

use prost::Message;
use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// prost encoding; decoding failures are `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct IdgovCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for IdgovCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for IdgovCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = IdgovDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        IdgovDecoder {
            inner: ProstDecoder::default(),
        }
    }
}

/// Decodes with prost and reports what does not decode as bad input.
#[derive(Debug, Clone)]
pub struct IdgovDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: Message + Default> Decoder for IdgovDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(buf).map_err(|s| {
            let mut m: String = s.message().chars().take(200).collect();
            if m.contains("UTF-8") {
                m.push_str("; every string must be valid UTF-8");
            }
            Status::invalid_argument(format!("the message is not a valid idgov.v1 message: {m}"))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}
