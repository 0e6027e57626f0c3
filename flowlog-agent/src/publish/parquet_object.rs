//! `--file-format parquet`: one Parquet file per object, as AWS writes with
//! `FileFormat=parquet`: one column per format field, named with `_` for `-`
//! (`log_status`, `pkt_srcaddr`, ...), typed as AWS types them (INT_32, INT_64, STRING), GZIP
//! compressed inside the file (no outer gzip layer), no header row.
//!
//! Every column is OPTIONAL: a `-` in an integer column (NODATA, SKIPDATA, an ingress
//! `traffic-path`) is a null, which is what Athena reads for `-` in AWS's text files too. String
//! columns carry the same text as the plain-text records, `-` included, so a query behaves the
//! same on both formats.
//!
//! Written with parquet's low-level column writers (no arrow: much less to compile). Rows are
//! buffered per column and written as a row group when the buffer is large or the object ends.

use std::sync::Arc;

use anyhow::Context;
use parquet::{
    basic::{Compression, GzipLevel, LogicalType, Repetition, Type as PhysicalType},
    data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type},
    file::{properties::WriterProperties, writer::SerializedFileWriter},
    schema::types::Type,
};

use crate::records::format::{ColumnType, LogFormat, Value};

/// A row group is written once its buffered values reach this size (uncompressed).
const ROW_GROUP_BYTES: usize = 32 * 1024 * 1024;

/// One column's buffered values and definition levels (1 = value, 0 = null).
enum Column {
    Int32 {
        values: Vec<i32>,
        defs: Vec<i16>,
    },
    Int64 {
        values: Vec<i64>,
        defs: Vec<i16>,
    },
    Text {
        values: Vec<ByteArray>,
        defs: Vec<i16>,
    },
}

/// The Parquet schema of a format.
pub fn schema(format: &LogFormat) -> anyhow::Result<Type> {
    let mut fields = Vec::with_capacity(format.fields().len());
    for f in format.fields() {
        let (physical, logical) = match f.column_type() {
            ColumnType::Int32 => (PhysicalType::INT32, LogicalType::integer(32, true)),
            ColumnType::Int64 => (PhysicalType::INT64, LogicalType::integer(64, true)),
            ColumnType::String => (PhysicalType::BYTE_ARRAY, LogicalType::String),
        };
        let column = Type::primitive_type_builder(&f.column_name(), physical)
            .with_repetition(Repetition::OPTIONAL)
            .with_logical_type(Some(logical))
            .build()
            .with_context(|| format!("Parquet column for ${{{}}}", f.name()))?;
        fields.push(Arc::new(column));
    }
    Type::group_type_builder("vpc_flow_logs")
        .with_fields(fields)
        .build()
        .context("Parquet schema")
}

/// One Parquet object being filled.
pub struct ParquetObject {
    writer: SerializedFileWriter<Vec<u8>>,
    columns: Vec<Column>,
    buffered_rows: usize,
    buffered_bytes: usize,
}

impl ParquetObject {
    pub fn new(format: &LogFormat) -> anyhow::Result<Self> {
        let props = WriterProperties::builder()
            .set_compression(Compression::GZIP(GzipLevel::default()))
            .set_created_by(format!("flowlog {}", env!("CARGO_PKG_VERSION")))
            .build();
        let writer =
            SerializedFileWriter::new(Vec::new(), Arc::new(schema(format)?), Arc::new(props))
                .context("cannot start a Parquet file")?;
        let columns = format
            .fields()
            .iter()
            .map(|f| match f.column_type() {
                ColumnType::Int32 => Column::Int32 {
                    values: Vec::new(),
                    defs: Vec::new(),
                },
                ColumnType::Int64 => Column::Int64 {
                    values: Vec::new(),
                    defs: Vec::new(),
                },
                ColumnType::String => Column::Text {
                    values: Vec::new(),
                    defs: Vec::new(),
                },
            })
            .collect();
        Ok(ParquetObject {
            writer,
            columns,
            buffered_rows: 0,
            buffered_bytes: 0,
        })
    }

    /// Adds one row: the record's values in format order.
    pub fn push(&mut self, row: &[Value<'_>], text: &mut String) -> anyhow::Result<()> {
        for (column, value) in self.columns.iter_mut().zip(row) {
            let int = match value {
                Value::Int(n) => Some(*n),
                _ => None,
            };
            match column {
                Column::Int32 { values, defs } => {
                    let v = int
                        .map(i32::try_from)
                        .transpose()
                        .context("value too large for an INT32 column")?;
                    defs.push(i16::from(v.is_some()));
                    values.extend(v);
                    self.buffered_bytes += 4;
                }
                Column::Int64 { values, defs } => {
                    let v = int
                        .map(i64::try_from)
                        .transpose()
                        .context("value too large for an INT64 column")?;
                    defs.push(i16::from(v.is_some()));
                    values.extend(v);
                    self.buffered_bytes += 8;
                }
                Column::Text { values, defs } => {
                    text.clear();
                    value.write_text(text);
                    defs.push(1);
                    self.buffered_bytes += text.len() + 4;
                    values.push(ByteArray::from(text.as_bytes().to_vec()));
                }
            }
        }
        self.buffered_rows += 1;
        if self.buffered_bytes >= ROW_GROUP_BYTES {
            self.flush_row_group()?;
        }
        Ok(())
    }

    /// Bytes the finished file would roughly take: written row groups plus buffered values.
    pub fn size_estimate(&self) -> usize {
        self.writer.bytes_written() + self.buffered_bytes
    }

    fn flush_row_group(&mut self) -> anyhow::Result<()> {
        if self.buffered_rows == 0 {
            return Ok(());
        }
        let mut rg = self
            .writer
            .next_row_group()
            .context("cannot start a Parquet row group")?;
        for column in &mut self.columns {
            let mut cw = rg
                .next_column()?
                .context("Parquet schema has fewer columns than the format")?;
            match column {
                Column::Int32 { values, defs } => {
                    cw.typed::<Int32Type>()
                        .write_batch(values, Some(defs), None)?;
                    values.clear();
                    defs.clear();
                }
                Column::Int64 { values, defs } => {
                    cw.typed::<Int64Type>()
                        .write_batch(values, Some(defs), None)?;
                    values.clear();
                    defs.clear();
                }
                Column::Text { values, defs } => {
                    cw.typed::<ByteArrayType>()
                        .write_batch(values, Some(defs), None)?;
                    values.clear();
                    defs.clear();
                }
            }
            cw.close().context("cannot close a Parquet column")?;
        }
        rg.close().context("cannot close a Parquet row group")?;
        self.buffered_rows = 0;
        self.buffered_bytes = 0;
        Ok(())
    }

    /// Writes what is buffered and the footer; returns the file's bytes.
    pub fn finish(mut self) -> anyhow::Result<Vec<u8>> {
        self.flush_row_group()?;
        self.writer
            .into_inner()
            .context("cannot finish the Parquet file")
    }
}
