//! The embedded server's BM25 index (tantivy), in RAM or in a directory.
//!
//! Schema: `id` (exact, stored), `title` and `text` (analysed: simple tokenizer, lower-case, English stop words,
//! English Snowball stemmer; stored), `url` (stored only), `source` (exact, stored; the `source` filter).
//! Queries are NOT parsed with tantivy's query language: the query is run through the same analyser and every term
//! becomes a `Should` clause on `title` (boost 2) and `text`, so user text can never inject query syntax.

use std::path::Path;

use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, BoostQuery, ConstScoreQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{doc, Index, IndexReader, ReloadPolicy, TantivyDocument, Term};

use super::corpus::CorpusDoc;
use crate::error::{Error, Result};
use crate::retrieval::{make_snippet, SearchFilters, SearchHit, DEFAULT_SNIPPET_CHARS};

/// Name of the analyser registered on every index this module opens.
const ANALYZER: &str = "webvlm_en";
/// Weight of a title match relative to a body match.
const TITLE_BOOST: f32 = 2.0;
/// Indexing memory budget (tantivy's minimum per thread is 15 MB).
const WRITER_BYTES: usize = 50_000_000;

/// Engine name reported in `search/v1` responses.
pub const ENGINE: &str = "webvlm-bm25";

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    title: Field,
    url: Field,
    text: Field,
    source: Field,
}

/// A searchable index plus its reader. Cheap to share behind an `Arc`; searches run concurrently.
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
}

/// Matches of one search, before the HTTP layer adds `query`/`engine`/`took_ms`.
pub struct SearchOutcome {
    pub total: u64,
    pub hits: Vec<SearchHit>,
}

fn index_err(what: &str) -> impl Fn(tantivy::TantivyError) -> Error + '_ {
    move |e| Error::Other(format!("search index: {what}: {e}"))
}

fn schema() -> Schema {
    let mut b = Schema::builder();
    let analysed = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    b.add_text_field("id", STRING | STORED);
    b.add_text_field("title", analysed.clone());
    b.add_text_field("url", STORED);
    b.add_text_field("text", analysed);
    b.add_text_field("source", STRING | STORED);
    b.build()
}

impl SearchIndex {
    /// Indexes `docs` into a fresh in-memory index.
    pub fn in_ram(docs: &[CorpusDoc]) -> Result<Self> {
        let index = Index::create_in_ram(schema());
        Self::fill(Self::prepare(index)?, docs, false)
    }

    /// Opens the index in `dir`, creating it (from `docs`) when the directory holds none. With `docs` given and
    /// `reindex` set, an existing index is emptied and rebuilt from `docs`.
    pub fn open_or_create(dir: &Path, docs: Option<&[CorpusDoc]>, reindex: bool) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Io(format!("cannot create index directory {}: {e}", dir.display())))?;
        let exists = dir.join("meta.json").exists();
        if exists {
            let index = Index::open_in_dir(dir).map_err(index_err("open"))?;
            let me = Self::prepare(index)?;
            match docs {
                Some(docs) if reindex => Self::fill(me, docs, true),
                _ => Ok(me),
            }
        } else {
            let docs = docs.ok_or_else(|| {
                Error::Config(format!("{} holds no index; pass --corpus to build one", dir.display()))
            })?;
            let index = Index::create_in_dir(dir, schema()).map_err(index_err("create"))?;
            Self::fill(Self::prepare(index)?, docs, false)
        }
    }

    fn prepare(index: Index) -> Result<Self> {
        let analyzer = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(40))
            .filter(LowerCaser)
            .filter(StopWordFilter::new(Language::English).expect("tantivy ships English stop words"))
            .filter(Stemmer::new(Language::English))
            .build();
        index.tokenizers().register(ANALYZER, analyzer);
        let s = index.schema();
        let field = |name: &str| {
            s.get_field(name)
                .map_err(|_| Error::Config(format!("the index lacks field `{name}`; rebuild it with --reindex")))
        };
        let fields = Fields {
            id: field("id")?,
            title: field("title")?,
            url: field("url")?,
            text: field("text")?,
            source: field("source")?,
        };
        let reader =
            index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(index_err("reader"))?;
        Ok(Self { index, reader, fields })
    }

    fn fill(self, docs: &[CorpusDoc], clear: bool) -> Result<Self> {
        let mut writer =
            self.index.writer_with_num_threads::<TantivyDocument>(1, WRITER_BYTES).map_err(index_err("writer"))?;
        if clear {
            writer.delete_all_documents().map_err(index_err("clear"))?;
        }
        let f = self.fields;
        for d in docs {
            writer
                .add_document(doc!(
                    f.id => d.id.as_str(),
                    f.title => d.title.as_str(),
                    f.url => d.url.as_str(),
                    f.text => d.text.as_str(),
                    f.source => d.source.as_str(),
                ))
                .map_err(index_err("add"))?;
        }
        writer.commit().map_err(index_err("commit"))?;
        self.reader.reload().map_err(index_err("reload"))?;
        Ok(self)
    }

    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The query's analysed terms (lower-cased, stemmed, stop words removed).
    fn terms(&self, query: &str) -> Result<Vec<String>> {
        let mut analyzer = self.index.tokenizer_for_field(self.fields.text).map_err(index_err("analyser"))?;
        let mut stream = analyzer.token_stream(query);
        let mut terms = Vec::new();
        while stream.advance() {
            let t = &stream.token().text;
            if !terms.contains(t) {
                terms.push(t.clone());
            }
        }
        Ok(terms)
    }

    /// BM25 top `k` for `query`, optionally restricted by `filters`.
    pub fn search(&self, query: &str, k: usize, filters: Option<&SearchFilters>) -> Result<SearchOutcome> {
        let f = self.fields;
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for t in self.terms(query)? {
            let title = TermQuery::new(Term::from_field_text(f.title, &t), IndexRecordOption::WithFreqs);
            should.push((Occur::Should, Box::new(BoostQuery::new(Box::new(title), TITLE_BOOST))));
            should.push((
                Occur::Should,
                Box::new(TermQuery::new(Term::from_field_text(f.text, &t), IndexRecordOption::WithFreqs)),
            ));
        }
        if should.is_empty() || k == 0 {
            return Ok(SearchOutcome { total: 0, hits: Vec::new() });
        }
        let mut bm25: Box<dyn Query> = Box::new(BooleanQuery::new(should));
        if let Some(source) = filters.and_then(|f| f.source.as_deref()) {
            let filter = TermQuery::new(Term::from_field_text(f.source, source), IndexRecordOption::Basic);
            let filter: Box<dyn Query> = Box::new(ConstScoreQuery::new(Box::new(filter), 0.0));
            bm25 = Box::new(BooleanQuery::new(vec![(Occur::Must, bm25), (Occur::Must, filter)]));
        }
        let searcher = self.reader.searcher();
        let (top, total) = searcher.search(&bm25, &(TopDocs::with_limit(k), Count)).map_err(index_err("search"))?;
        let mut hits = Vec::with_capacity(top.len());
        for (rank, (score, addr)) in top.into_iter().enumerate() {
            let d: TantivyDocument = searcher.doc(addr).map_err(index_err("stored document"))?;
            let get = |field: Field| d.get_first(field).and_then(|v| v.as_str()).unwrap_or("").to_string();
            let text = get(f.text);
            hits.push(SearchHit {
                id: get(f.id),
                rank: rank + 1,
                score,
                title: get(f.title),
                url: get(f.url),
                snippet: make_snippet(&text, query, DEFAULT_SNIPPET_CHARS),
                source: get(f.source),
            });
        }
        Ok(SearchOutcome { total: total as u64, hits })
    }
}
