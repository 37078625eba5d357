"""Search: a DiffATR model, an index and the encoders wired together (``SearchEngine``).

The engine projects the index once, keeps each denoiser's candidate cache, cleans and encodes
queries, and runs the first stage (``topk``, or a vector store from ``stores``) and the
re-rank (``rerank``) with the ``RetrievalConfig`` it is given, as it is: no knob has a default
here, and none is checked again. Audio -> audio ("sounds like this one") is the first stage
alone, in the space of ``similar``; one result per sound keeps the best row of each recording
group (``groups``). It returns ``SearchHit`` lists and, for a page, the trajectory view of a
search. No file I/O besides what the encoders do when handed a path.

Shape legend: Q queries, N candidates (the corpus), K candidates re-ranked per query, D
embedding width.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from diffatr.config import DEFAULT_BATCH_SIZE, RetrievalConfig
from diffatr.retrieval.expansion import expand_text_queries
from diffatr.retrieval.groups import NEAR_DUPLICATE_COSINE, RecordingGroups, collapse
from diffatr.retrieval.index import IndexMismatchError, RetrievalIndex, encoder_mismatches
from diffatr.retrieval.rerank import RerankResult, rerank_topk
from diffatr.retrieval.similar import SAME_AUDIO_COSINE, similar_embeddings
from diffatr.retrieval.topk import SearchError, cosine_topk
from diffatr.retrieval.trajectory import trajectory_view

__all__ = ["DIRECTIONS", "SIMILAR", "SearchEngine", "SearchError", "SearchHit", "SearchResults", "clean_query"]

DIRECTIONS = ("text_to_audio", "audio_to_text")  # the re-ranked directions (a denoiser each)
SIMILAR = "audio_to_audio"  # sounds like a sound: the first stage alone
# With one result per sound, the first stage is asked for this many times the rows shown (or
# re-ranked), then this many times more while too few recordings are found.
_GROUP_WIDTH_FACTOR = 8
_SAME_AUDIO_COLUMNS = 64  # audio -> audio: the top rows checked for the query's own audio


@dataclass(frozen=True)
class SearchHit:
    """One result of a search.

    Attributes:
        rank: final position, 1-based (the first hit is rank 1, as in evaluation's ranks).
        row: the row in the index (a clip for text->audio, a caption for audio->text).
        clip_id: the clip (for audio->text: the clip the caption belongs to).
        caption: the matched caption (audio->text), or the clip's first caption (or None).
        captions: all captions of the clip.
        path: the clip's audio path, if known.
        cosine: phase-1 similarity S.
        diffusion: softmax(x0 / temp) of this item, ``None`` beyond the re-ranked top K.
        fused: the final score (S + alpha * diffusion; S beyond the top K).
        cosine_rank: 1-based position by cosine alone (one result per sound: among the
            recordings, each at its best cosine).
        moved: cosine_rank - rank: how many places the diffusion moved it up.
        metadata: the clip's metadata.
        variants: with one result per sound, how many other clips of its recording the library
            holds (hidden from the results); else 0.
    """

    rank: int
    row: int
    clip_id: str
    caption: str | None
    captions: list[str]
    path: str | None
    cosine: float
    diffusion: float | None
    fused: float
    cosine_rank: int
    moved: int
    metadata: dict[str, Any]
    variants: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field (``diffusion`` may be None)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, eq=False)
class SearchResults(Sequence):
    """The hits of a search, one list per query, best first: ``results[0]`` is the first query's.

    Attributes:
        hits: one list of ``SearchHit`` per query.
        direction: "text_to_audio", "audio_to_text" or "audio_to_audio".
        config: the settings the search ran with.
        ranking: the engine's ``RerankResult`` (with the DDIM path when it was asked for:
            ``SearchEngine.trajectory_view`` reads it; audio -> audio: the first stage alone,
            diffusion NaN).
        queries: the query texts, or the audio queries' names.
    """

    hits: list[list[SearchHit]]
    direction: str
    config: RetrievalConfig
    ranking: RerankResult
    queries: list[str]

    def __getitem__(self, i: Any) -> Any:
        return self.hits[i]

    def __len__(self) -> int:
        return len(self.hits)


class SearchEngine:
    """Text->audio, audio->text and audio->audio search over a ``RetrievalIndex`` with a DiffATR model.

    Projects the index's backbone features once, precomputes each denoiser's candidate cache
    once, and answers queries. Build a new engine after changing the model's weights (the
    caches are snapshots). Computation follows the model's device. Call ``model.eval()`` first.

    Args:
        model: a DiffATR (``project_text``, ``project_audio``, ``denoisers``, ``make_scheduler``,
            ``config``).
        index: the index to search.
        text_encoder: turns query strings (and, if the index lacks caption features, its
            captions) into text backbone features (``encode(list[str]) -> (Q, Dt)``).
        audio_encoder: turns audio queries into audio backbone features (``embed_file(path)``,
            ``embed_waveform(array, sr)``).
        batch_size: queries per denoiser batch (speed and memory only).
        first_stage: per direction, a vector store that answers the first stage (FAISS, Milvus:
            ``diffatr.retrieval.stores.attach``); the re-rank on top is unchanged. The
            "audio_to_audio" store holds the clips in the checkpoint's own ``similar_space``
            (a search in another space ranks exactly).
    """

    def __init__(self, model: Any, index: RetrievalIndex, text_encoder: Any = None,
                 audio_encoder: Any = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 first_stage: dict[str, Any] | None = None) -> None:
        self.model = model
        self.index = index
        # direction -> a VectorStore (diffatr.retrieval.stores) over this index's rows in this
        # model's space, searched instead of the exact cosine top-K; None = exact.
        self.first_stage = dict(first_stage or {})
        self.text_encoder = text_encoder
        self.audio_encoder = audio_encoder
        self.batch_size = batch_size
        self._check_backbones()
        self.scheduler = model.make_scheduler()
        self._caption_owner = index.caption_to_clip.tolist()
        self._first_caption = [c[0] if c else None for c in index.captions]
        self._flat_captions = index.flat_captions
        # With a vector store for a direction, its candidates' embeddings come from the store,
        # K per query: nothing of size N is projected or precomputed here (large libraries).
        self._caches: dict[str, Any] = {}
        self.audio_embeds: Tensor | None = None  # (N, D), exact first stage only
        if "text_to_audio" not in self.first_stage:
            with torch.no_grad():
                self.audio_embeds = self._project(model.project_audio, index.audio_features)
                self._caches["text_to_audio"] = model.denoisers["text_to_audio"].precompute(self.audio_embeds)
        self.text_embeds: Tensor | None = None  # (M, D), built on first need
        if index.text_features is not None and "audio_to_text" not in self.first_stage:
            self._build_text_side(index.text_features)
        self._similar_embeds: dict[str, Tensor] = {}  # similar space -> (N, D'), built on first need
        self._groups: RecordingGroups | None = None  # built on the first search with one result per sound
        self._row_of: dict[str, int] | None = None  # clip id -> row, built on the first search by clip id

    # ------------------------------------------------------------------ setup

    @property
    def device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except (StopIteration, AttributeError):
            return torch.device("cpu")

    def _check_backbones(self) -> None:
        config = getattr(self.model, "config", None)
        if config is None:
            return
        problems = encoder_mismatches(self.index.encoders.get("audio"), dataclasses.asdict(config.audio), "audio")
        if self.index.audio_dim != config.audio.embed_dim:
            problems.append(f"index audio features are {self.index.audio_dim}-d, the model expects "
                            f"{config.audio.embed_dim}-d")
        if self.index.text_features is not None:
            problems += encoder_mismatches(self.index.encoders.get("text"), dataclasses.asdict(config.text), "text")
            if self.index.text_dim != config.text.embed_dim:
                problems.append(f"index caption features are {self.index.text_dim}-d, the model "
                                f"expects {config.text.embed_dim}-d")
        if problems:
            raise IndexMismatchError(
                "this index was built with other backbones than the model's: " + "; ".join(problems)
                + ". Rebuild the index with this checkpoint's encoders (`diffatr index ... --out DIR`).")

    def _project(self, project: Callable[[Tensor], Tensor], features: Tensor, chunk: int = 8192) -> Tensor:
        features = features.to(self.device, torch.float32)
        parts = [project(features[i : i + chunk]) for i in range(0, features.shape[0], chunk)]
        return torch.cat(parts) if parts else features.new_zeros(0, self.model.config.embed_dim)

    def _build_text_side(self, text_features: Tensor) -> None:
        with torch.no_grad():
            self.text_embeds = self._project(self.model.project_text, text_features)  # (M, D)
            self._caches["audio_to_text"] = self.model.denoisers["audio_to_text"].precompute(self.text_embeds)

    def _ensure_text_side(self) -> None:
        if self.text_embeds is not None or "audio_to_text" in self.first_stage:
            return
        if self.index.num_captions == 0:
            raise SearchError("audio->text search needs captions in the index, and this index has "
                              "none: index clips with captions (a manifest with a caption column), "
                              "or search text->audio instead")
        if self.text_encoder is None:
            raise SearchError("the index has captions but no caption features: pass text_encoder= "
                              "to the SearchEngine, or rebuild the index with a text encoder")
        self._build_text_side(torch.as_tensor(self.text_encoder.encode(self.index.flat_captions)))

    # ------------------------------------------------------------------ ranking

    def rank(self, direction: str, features: Tensor, config: RetrievalConfig, *, projected: bool = False,
             return_trajectory: bool = False, width: int | None = None,
             exclude: Sequence[Sequence[int]] | None = None) -> RerankResult:
        """Rank the index for query features; the low-level call under ``search_*``.

        Args:
            direction: "text_to_audio" (queries are text), "audio_to_text" or "audio_to_audio".
            features: (Q, Dt|Da) backbone features (or (Q, D) embeddings when ``projected``;
                audio -> audio takes backbone features).
            config: the settings, as the entry point built them (``ModelConfig.with_retrieval``).
            projected: ``features`` are already embeddings in the shared space.
            return_trajectory: record the DDIM path (for ``trajectory_view``).
            width: rows ranked per query (None: max(K, num_results)); at least K.
            exclude: audio -> audio: per query, index rows never returned (its own clip).

        Returns:
            RerankResult with ``width`` columns, clamped to the corpus size; columns beyond the
            re-ranked top K keep their cosine order and have diffusion = NaN, fused = cosine.
            Audio -> audio: the first stage alone (``_rank_similar``).
        """
        if not isinstance(config, RetrievalConfig):
            raise SearchError(f"config must be a RetrievalConfig, got {type(config).__name__}")
        if direction == SIMILAR and not projected:
            return self._rank_similar(features, config, config.num_results if width is None else width, exclude)
        if direction not in DIRECTIONS:
            raise SearchError(f"direction must be one of {(*DIRECTIONS, SIMILAR)} (audio_to_audio with backbone "
                              f"features), got {direction!r}")
        queries, candidates = self._queries(direction, features, projected)
        # The first stage ranks with the expanded text query; the denoiser keeps the query it was
        # trained on (docs/method.md "Known-caption expansion").
        first = queries
        if direction == "text_to_audio" and not projected:
            with torch.no_grad():
                first = expand_text_queries(self.model, torch.as_tensor(features).reshape(len(queries), -1), queries,
                                            config)
        store = self.first_stage.get(direction)
        n = len(store) if store is not None else candidates.shape[0]
        top_k = min(config.top_k, n)
        width = min(max(top_k, config.num_results if width is None else width), n)
        if store is not None:  # a vector store's (maybe approximate) top, rows = store ids
            scores, indices = store.search(first.float().cpu(), width)
            scores, indices = scores.to(queries.device), indices.to(queries.device)
        else:
            scores, indices = cosine_topk(first, candidates, width)  # (Q, width)
        top_indices, rows = indices[:, :top_k], None
        if store is not None:  # only the shortlisted rows, from the store's exact vectors
            rows, top_indices = torch.unique(top_indices, return_inverse=True)  # (U,), (Q, K) into rows
            candidates = store.vectors(rows.cpu()).to(queries.device)  # (U, D)
        result = rerank_topk(queries, candidates, scores[:, :top_k], top_indices, self.model.denoisers[direction],
                             self.scheduler, config, candidate_cache=self._caches.get(direction), factorised=True,
                             return_trajectory=return_trajectory, batch_size=self.batch_size)
        if rows is not None:  # back to index rows
            result = dataclasses.replace(result, indices=rows.to(result.indices.device)[result.indices])
        result.settings["direction"] = direction
        return _with_cosine_tail(result, scores, indices, top_k, width)

    def _queries(self, direction: str, features: Tensor, projected: bool) -> tuple[Tensor, Tensor | None]:
        """(queries (Q, D) in the shared space, the exact candidates (N, D) or None with a store)."""
        features = torch.as_tensor(features)
        if features.ndim == 1:
            features = features[None]
        if direction == "audio_to_text":
            self._ensure_text_side()
            candidates, project = self.text_embeds, self.model.project_audio
        else:
            candidates, project = self.audio_embeds, self.model.project_text
        with torch.no_grad():
            if projected:
                return F.normalize(features.to(self.device, torch.float32), dim=-1), candidates
            expected = getattr(self.model.config, "audio" if direction == "audio_to_text" else "text").embed_dim
            if features.ndim != 2 or features.shape[1] != expected:
                raise SearchError(f"query features must be (Q, {expected}), got {tuple(features.shape)}")
            return self._project(project, features), candidates  # (Q, D)

    def _rank_similar(self, features: Tensor, config: RetrievalConfig, width: int,
                      exclude: Sequence[Sequence[int]] | None) -> RerankResult:
        """Audio -> audio: the first stage alone, in ``config.similar_space`` (no denoiser is
        trained for it), without each query's ``exclude`` rows or a clip of its very audio
        (backbone cosine >= ``SAME_AUDIO_COSINE``). Diffusion and x0 are NaN, fused = cosine;
        ``settings["excluded"]`` lists the rows left out, per query."""
        features = self._backbone_queries(features)  # (Q, Da)
        queries = similar_embeddings(self.model, features, config.similar_space)  # (Q, D')
        own_space = config.similar_space == self.model.config.retrieval.similar_space
        store = self.first_stage.get(SIMILAR) if own_space else None
        n = len(self.index)
        banned = [set(map(int, e)) for e in exclude] if exclude is not None else [set() for _ in range(len(queries))]
        fetch = min(n, width + 1 + max(map(len, banned), default=0))  # + 1: the query's own audio, if indexed
        while True:
            if store is not None:
                scores, rows = store.search(queries.float().cpu(), fetch)
                scores, rows = scores.to(queries.device), rows.to(queries.device)
            else:
                scores, rows = cosine_topk(queries, self._similar_candidates(config.similar_space), fetch)
            keep = self._not_the_query(features, rows, banned)  # (Q, fetch)
            if fetch >= n or bool((keep.sum(dim=1) >= width).all()):
                break
            fetch = min(n, 2 * fetch)
        width = min(width, int(keep.sum(dim=1).min())) if len(keep) else 0
        order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :width]  # kept first, in order
        dropped = [sorted(set(r for r, k in zip(rq, kq) if not k) | b)
                   for rq, kq, b in zip(rows.tolist(), keep.tolist(), banned)]
        scores, rows = scores.gather(1, order), rows.gather(1, order)  # (Q, width)
        nan = torch.full_like(scores, float("nan"))
        return RerankResult(indices=rows, cosine=scores, diffusion=nan, fused=scores,
                            cosine_rank=torch.arange(width, device=rows.device).expand_as(rows), x0=nan,
                            trajectory=None, settings={"direction": SIMILAR, "similar_space": config.similar_space,
                                                       "excluded": dropped})

    def _backbone_queries(self, features: Tensor) -> Tensor:
        features = torch.as_tensor(features)
        if features.ndim == 1:
            features = features[None]
        expected = self.model.config.audio.embed_dim
        if features.ndim != 2 or features.shape[1] != expected:
            raise SearchError(f"audio query features must be (Q, {expected}), got {tuple(features.shape)}")
        return features.to(self.device, torch.float32)

    def _similar_candidates(self, space: str) -> Tensor:
        """(N, D') the index's clips in a similar space, built on first need (then kept)."""
        if space not in self._similar_embeds:
            features = self.index.audio_features
            self._similar_embeds[space] = torch.cat([
                similar_embeddings(self.model, features[i : i + 8192].to(self.device), space)
                for i in range(0, features.shape[0], 8192)])
        return self._similar_embeds[space]

    def _not_the_query(self, features: Tensor, rows: Tensor, banned: list[set[int]]) -> Tensor:
        """(Q, W) bool: which ranked rows may be shown (not banned, not the query's own audio).

        The query's own audio ranks first in every space (the same features give the same
        vector): only the first ``_SAME_AUDIO_COLUMNS`` rows are compared with it, which leaves
        an approximate store room to misorder them and reads no more of a large index."""
        unit = F.normalize(features, dim=-1)  # (Q, Da)
        keep = torch.ones_like(rows, dtype=torch.bool)
        first = min(rows.shape[1], _SAME_AUDIO_COLUMNS)
        for q in range(rows.shape[0]):
            own = self.index.audio_features[rows[q, :first].cpu()].to(unit.device, torch.float32)  # (first, Da)
            keep[q, :first] = F.normalize(own, dim=-1) @ unit[q] < SAME_AUDIO_COSINE
            if banned[q]:
                keep[q] &= ~torch.isin(rows[q], torch.tensor(sorted(banned[q]), device=rows.device))
        return keep

    def recording_groups(self) -> RecordingGroups:
        """The recording group of each clip (``diffatr.retrieval.groups``), built on first need."""
        if self._groups is None:
            self._groups = RecordingGroups.of_index(self.index.clip_ids, self.index.metadata,
                                                    self.index.audio_features, NEAR_DUPLICATE_COSINE)
        return self._groups

    def hits(self, result: RerankResult, direction: str, k: int) -> list[list[SearchHit]]:
        """Turn the first ``k`` columns of a ``RerankResult`` into ``SearchHit`` lists."""
        columns = _columns(result)
        return [[self._hit(columns, qi, position, position + 1, direction)
                 for position in range(min(k, len(columns[0][qi])))] for qi in range(len(columns[0]))]

    def hits_one_per_sound(self, result: RerankResult, direction: str, k: int) -> tuple[list[list[SearchHit]], bool]:
        """The best-ranked row of each recording group (``recording_groups``), ``k`` per query,
        each with the number of other clips of its recording (``variants``).

        Returns:
            (hits, whether every query found ``k`` recordings in ``result``'s columns).
        """
        groups = self.recording_groups()
        clips = result.indices.cpu()
        if direction == "audio_to_text":
            clips = self.index.caption_to_clip[clips] if clips.numel() else clips
        ranked = groups.ids[clips] if clips.numel() else clips  # (Q, W) group of each ranked row
        columns = _columns(result)
        excluded = result.settings.get("excluded")
        out, complete = [], True
        for qi in range(ranked.shape[0]):
            mine = groups.ids[torch.tensor(excluded[qi], dtype=torch.long)] if excluded else None
            kept, hidden = collapse(ranked[qi], k, mine, groups.sizes)
            complete &= len(kept) == k
            cosine_ranks = _recording_cosine_ranks(ranked[qi], result.cosine[qi].cpu(), kept)
            out.append([self._hit(columns, qi, position, rank + 1, direction, cosine_rank=cosine_rank, variants=n)
                        for rank, (position, cosine_rank, n) in enumerate(zip(kept, cosine_ranks, hidden))])
        return out, complete

    def _hit(self, columns: tuple[list, ...], qi: int, position: int, rank: int, direction: str, *,
             cosine_rank: int | None = None, variants: int = 0) -> SearchHit:
        """One ranked row as a ``SearchHit`` (``cosine_rank``: 1-based; None = the row's own)."""
        idx, cos, dif, fus, crank = columns
        row = idx[qi][position]
        if direction == "audio_to_text":
            clip, caption = self._caption_owner[row], self._flat_captions[row]
        else:
            clip, caption = row, self._first_caption[row]
        d = dif[qi][position]
        cosine_rank = crank[qi][position] + 1 if cosine_rank is None else cosine_rank
        return SearchHit(rank=rank, row=row, clip_id=self.index.clip_ids[clip], caption=caption,
                         captions=list(self.index.captions[clip]), path=self.index.paths[clip],
                         cosine=cos[qi][position], diffusion=None if d != d else d, fused=fus[qi][position],
                         cosine_rank=cosine_rank, moved=cosine_rank - rank, metadata=dict(self.index.metadata[clip]),
                         variants=variants)

    # ------------------------------------------------------------------ public search

    def search_text(self, queries: str | Sequence[str], config: RetrievalConfig | None = None, *,
                    return_trajectory: bool = False) -> SearchResults:
        """Text -> audio: the best clips for each query string.

        Args:
            queries: one string or a list of strings (not empty, not blank).
            config: the settings (``config.num_results`` results per query, clamped to the
                number of clips); None = the checkpoint's own (``model.config.retrieval``).
            return_trajectory: record the DDIM path (for ``trajectory_view``).

        Returns:
            ``SearchResults``: one list of ``SearchHit`` per query, best first.
        """
        texts = _clean_queries(queries)
        if self.text_encoder is None:
            raise SearchError("search_text needs a text encoder: pass text_encoder= to SearchEngine "
                              "(or use search_text_embeds with precomputed features)")
        features = torch.as_tensor(self.text_encoder.encode(texts))
        return self._search("text_to_audio", features, config, texts, projected=False,
                            return_trajectory=return_trajectory)

    def search_audio(self, audio: Any, config: RetrievalConfig | None = None, *, sample_rate: int | None = None,
                     return_trajectory: bool = False) -> SearchResults:
        """Audio -> text: the best captions of the index for each audio query.

        Args:
            audio: an audio file path, or a waveform (np.ndarray or tensor shaped (S,), (S, C)
                or (C, S)) at ``sample_rate``, or a list of either. UI formats (Gradio's
                ``(sample_rate, array)`` value, FileData dicts) are converted by the UI.
            config: as for ``search_text`` (results clamped to the number of captions).
            sample_rate: the rate of the waveforms, in Hz (required with waveforms).
            return_trajectory: as for ``search_text``.

        Returns:
            ``SearchResults`` (each hit's ``caption`` is the matched caption).
        """
        if self.index.num_captions == 0:
            self._ensure_text_side()  # raises the clear "needs captions" error
        items = _audio_items(audio)
        features = self.embed_audio(items, sample_rate=sample_rate)
        return self._search("audio_to_text", features, config, [_audio_name(item) for item in items],
                            projected=False, return_trajectory=return_trajectory)

    def search_similar(self, query: Any, config: RetrievalConfig | None = None, *,
                       sample_rate: int | None = None) -> SearchResults:
        """Audio -> audio: the clips of the index that sound most like ``query``, never the query
        clip itself (docs/method.md, "Sounds like this one").

        Args:
            query: a clip id of the index (its stored features are used: nothing is decoded),
                an audio file path, a waveform at ``sample_rate``, or a list of these. A string
                that is a clip id of the index is that clip.
            config: as for ``search_text``: ``similar_space`` says where similarity is measured,
                ``one_per_sound`` keeps one clip per recording (results clamped to the clips).
            sample_rate: the rate of the waveforms, in Hz (required with waveforms).

        Returns:
            ``SearchResults`` with direction "audio_to_audio": each hit's ``cosine`` (= ``fused``)
            is its similarity to the query, ``caption`` its first caption, ``diffusion`` None.
            The query's own clip, and any clip whose audio is the query's (the same file
            decoded again), is never a hit.
        """
        items = list(query) if isinstance(query, (list, tuple)) else [query]
        if not items:
            raise SearchError("give a clip id or an audio query (or a non-empty list of them)")
        rows = [self.clip_row(item) for item in items]
        audio = [item for item, row in zip(items, rows) if row is None]
        for item in audio:
            if isinstance(item, str) and not os.path.exists(item):
                raise SearchError(f"{item!r} is neither a clip id of this index nor an audio file")
        embedded = iter(self.embed_audio(audio, sample_rate=sample_rate) if audio else [])
        features = torch.stack([self.index.audio_features[row] if row is not None else next(embedded).cpu()
                                for row in rows])  # (Q, Da)
        names = [item if row is not None else _audio_name(item) for item, row in zip(items, rows)]
        exclude = [[row] if row is not None else [] for row in rows]
        return self._search(SIMILAR, features, config, names, projected=False, exclude=exclude)

    def search_similar_embeds(self, features: Tensor, config: RetrievalConfig | None = None, *,
                              exclude: Sequence[Sequence[int]] | None = None) -> SearchResults:
        """Audio -> audio for precomputed audio backbone features (Q, Da); ``exclude``: per
        query, index rows never returned (as ``search_similar`` does for a clip id's own row)."""
        return self._search(SIMILAR, features, config, None, projected=False, exclude=exclude)

    def embed_audio(self, audio: Any, *, sample_rate: int | None = None) -> Tensor:
        """(Q, Da) audio backbone features of audio queries: a path, a waveform at
        ``sample_rate``, or a list of either (as ``search_audio`` takes them)."""
        if self.audio_encoder is None:
            raise SearchError("an audio query needs an audio encoder: pass audio_encoder= to SearchEngine "
                              "(or search with precomputed features: search_audio_embeds, search_similar_embeds)")
        feats = [self._embed_audio(item, sample_rate) for item in _audio_items(audio)]
        return torch.stack([torch.as_tensor(f, dtype=torch.float32).reshape(-1) for f in feats])

    def search_text_embeds(self, features: Tensor, config: RetrievalConfig | None = None, *,
                           projected: bool = False) -> SearchResults:
        """Text -> audio for precomputed text backbone features (Q, Dt) (or embeddings (Q, D)
        when ``projected``)."""
        return self._search("text_to_audio", features, config, None, projected=projected)

    def search_audio_embeds(self, features: Tensor, config: RetrievalConfig | None = None, *,
                            projected: bool = False, return_trajectory: bool = False) -> SearchResults:
        """Audio -> text for precomputed audio backbone features (Q, Da) (or embeddings (Q, D)
        when ``projected``)."""
        return self._search("audio_to_text", features, config, None, projected=projected,
                            return_trajectory=return_trajectory)

    def _search(self, direction: str, features: Tensor, config: RetrievalConfig | None,
                queries: list[str] | None, *, projected: bool, return_trajectory: bool = False,
                exclude: Sequence[Sequence[int]] | None = None) -> SearchResults:
        config = self.model.config.retrieval if config is None else config
        width, total = self._group_width(direction, config)
        while True:  # with one result per sound, wider until k recordings are found (or all rows are ranked)
            ranking = self.rank(direction, features, config, projected=projected,
                                return_trajectory=return_trajectory, width=width, exclude=exclude)
            if not config.one_per_sound:
                hits = self.hits(ranking, direction, config.num_results)
                break
            hits, complete = self.hits_one_per_sound(ranking, direction, config.num_results)
            if complete or width >= total:
                break
            width = min(total, width * _GROUP_WIDTH_FACTOR)
        return SearchResults(hits=hits, direction=direction, config=config, ranking=ranking,
                             queries=queries if queries is not None else [f"query {i}" for i in range(len(hits))])

    def _group_width(self, direction: str, config: RetrievalConfig) -> tuple[int | None, int]:
        """(rows to rank first, rows in all) for a search: without one result per sound, the
        rank's own width (None); with it, a multiple of the rows shown (then more, in ``_search``,
        while too few recordings are found)."""
        if not isinstance(config, RetrievalConfig) or not config.one_per_sound:
            return None, 0  # (rank refuses a config of another type)
        if direction == "audio_to_text":
            self._ensure_text_side()
        own_space = direction != SIMILAR or config.similar_space == self.model.config.retrieval.similar_space
        store = self.first_stage.get(direction) if own_space else None
        rows = len(self.index.flat_captions) if direction == "audio_to_text" else len(self.index)
        total = len(store) if store is not None else rows
        return max(1, min(total, max(config.top_k, config.num_results) * _GROUP_WIDTH_FACTOR)), total

    def clip_row(self, item: Any) -> int | None:
        """The index row of a clip id (None: not a clip id of this index)."""
        if not isinstance(item, str):
            return None
        if self._row_of is None:
            self._row_of = {clip: row for row, clip in enumerate(self.index.clip_ids)}
        return self._row_of.get(item)

    def trajectory_view(self, results: SearchResults, query: int = 0) -> dict[str, Any]:
        """The DDIM path of one query of a search, as JSON-able lists for a page to draw.

        Args:
            results: a search of this engine run with ``return_trajectory=True``.
            query: which of its queries.

        Returns:
            ``diffatr.retrieval.trajectory.trajectory_view``'s lists, with ``direction``,
            ``query`` (its text or name) and ``settings`` (the config, as a dict).
        """
        labels = self.index.clip_ids if results.direction == "text_to_audio" else self._flat_captions
        view = trajectory_view(results.ranking, query, labels, float(self.model.config.diffusion.ce_scale),
                               highlight=results.config.num_results)
        return {"direction": results.direction, "query": results.queries[query], **view,
                "settings": dataclasses.asdict(results.config)}

    def _embed_audio(self, item: Any, sample_rate: int | None) -> Tensor:
        if isinstance(item, (str, os.PathLike)):
            return self.audio_encoder.embed_file(item)
        if sample_rate is None:
            raise SearchError("a waveform needs its sample rate: pass sample_rate=")
        return self.audio_encoder.embed_waveform(item, int(sample_rate))


def _clean_queries(queries: str | Sequence[str]) -> list[str]:
    if isinstance(queries, str):
        queries = [queries]
    if not isinstance(queries, (list, tuple)) or not queries:
        raise SearchError("give a query string (or a non-empty list of them)")
    return [clean_query(query) for query in queries]


def clean_query(query: Any) -> str:
    """A text query without control characters (NULs included) or outer spaces.

    Raises:
        SearchError: not a string, empty, or without a single letter or digit (only symbols,
            punctuation or emoji: the encoder would still return a confident ranking).
    """
    if not isinstance(query, str):
        raise SearchError(f"a text query must be a string, got {type(query).__name__}")
    query = "".join(ch for ch in query if ch.isprintable() or ch.isspace()).strip()
    if not query:
        raise SearchError("the query is empty: type a few words describing a sound")
    if not any(ch.isalnum() for ch in query):
        raise SearchError("the query has no letters or digits: type a few words describing a sound, "
                          "e.g. 'a dog barking'")
    return query


def _audio_name(item: Any) -> str:
    return os.path.basename(str(item)) if isinstance(item, (str, os.PathLike)) else "a recording"


def _columns(result: RerankResult) -> tuple[list, ...]:
    """A result's per-column values as lists: (indices, cosine, diffusion, fused, cosine_rank)."""
    return tuple(t.cpu().tolist() for t in (result.indices, result.cosine, result.diffusion, result.fused,
                                            result.cosine_rank))


def _recording_cosine_ranks(groups: Tensor, cosine: Tensor, kept: list[int]) -> list[int]:
    """1-based cosine ranks among recordings: for each kept position, one plus the number of
    other groups with a ranked row of a higher cosine (each recording at its best cosine)."""
    out = []
    for position in kept:
        above = groups[cosine > cosine[position]]
        out.append(1 + len(set(above.tolist()) - {int(groups[position])}))
    return out


def _audio_items(audio: Any) -> list[Any]:
    """The queries of ``search_audio``: paths and waveforms, one per item (no UI formats)."""
    if isinstance(audio, (str, os.PathLike, np.ndarray, Tensor)):
        return [audio]
    if isinstance(audio, (list, tuple)) and audio and all(
            isinstance(a, (str, os.PathLike, np.ndarray, Tensor)) for a in audio):
        return list(audio)
    raise SearchError("give an audio path or a waveform with sample_rate= (or a non-empty list "
                      f"of them), got {type(audio).__name__}")


def _with_cosine_tail(result: RerankResult, scores: Tensor, indices: Tensor, top_k: int, width: int) -> RerankResult:
    """``result`` (the re-ranked top K) followed by the first stage's entries K..width in cosine
    order: diffusion and x0 NaN, fused = cosine."""
    if width <= top_k:
        return result
    tail = slice(top_k, width)
    nan = torch.full_like(scores[:, tail], float("nan"))
    ranks = torch.arange(top_k, width, device=scores.device).expand_as(indices[:, tail])
    return dataclasses.replace(
        result,
        indices=torch.cat([result.indices, indices[:, tail]], 1),
        cosine=torch.cat([result.cosine, scores[:, tail]], 1),
        diffusion=torch.cat([result.diffusion, nan], 1),
        fused=torch.cat([result.fused, scores[:, tail]], 1),
        cosine_rank=torch.cat([result.cosine_rank, ranks], 1),
        x0=torch.cat([result.x0, nan], 1))
