"""CTR and CVR models built from shared blocks; every model returns logits.

Inputs are typed and separate, as in torchrec's DLRM: ``sparse`` (B, S) int64
embedding rows from the feature map (one column per sparse field, already offset-free:
row 0 of each field is missing/out-of-vocabulary) and ``dense`` (B, D) float32
standardised values. Losses live in the training loop, not here.

- :class:`LogisticRegression`: one weight per sparse value plus a linear dense part.
- :class:`DCNv2`: embeddings and dense values concatenated, then a stack of full-rank
  cross layers (x_{l+1} = x_0 * (W x_l + b) + x_l) in parallel with an MLP (Wang et al.,
  DCN V2, 2021).
- :class:`DeepFM`: first-order weights, a factorisation machine's pairwise interactions
  of every field's embedding (dense values scale a learnt vector each) and an MLP over
  the same embeddings, summed into one logit (Guo et al., 2017).
- :class:`WideAndDeep`: first-order weights (the wide part) plus an MLP over embeddings
  and dense values (the deep part), trained jointly (Cheng et al., 2016).
- :class:`ESMM`: two DCN-v2 towers over one shared embedding; the CTR tower is trained
  on pCTR and the product pCTR x pCVR on pCTCVR over all impressions, so pCVR is learnt
  over the whole impression space, not only the clicked sample (Ma et al., 2018).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """Architecture; saved in the manifest so a model can be rebuilt from its numbers."""

    kind: str = "dcn"  # "lr", "dcn", "deepfm", "widedeep" or "esmm"
    embedding_dim: int = 16
    cross_layers: int = 3
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.1

    def as_dict(self) -> dict:
        return asdict(self)


class FieldEmbedding(nn.Module):
    """One table for every sparse field, each field in its own row range.

    sparse (B, S) int64 -> (B, S, dim)
    """

    def __init__(self, cardinalities: list[int], dim: int) -> None:
        super().__init__()
        offsets = torch.tensor([0, *cardinalities[:-1]], dtype=torch.int64).cumsum(0)
        self.offsets: torch.Tensor
        self.register_buffer("offsets", offsets, persistent=True)
        self.table = nn.Embedding(sum(cardinalities), dim)
        nn.init.normal_(self.table.weight, std=0.01)

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        return self.table(sparse + self.offsets)


def flat_inputs(
    embedding: FieldEmbedding, sparse: torch.Tensor, dense: torch.Tensor
) -> torch.Tensor:
    """Every field's embedding and the dense values side by side. -> (B, S * dim + D)"""
    return torch.cat([embedding(sparse).flatten(1), dense], dim=1)


class CrossNetV2(nn.Module):
    """Full-rank cross layers. x (B, d) -> (B, d)"""

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class MLP(nn.Module):
    """Linear, ReLU and dropout per hidden width. x (B, d) -> (B, hidden[-1])"""

    def __init__(self, dim: int, hidden: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for width in hidden:
            blocks += [nn.Linear(dim, width), nn.ReLU(), nn.Dropout(dropout)]
            dim = width
        self.net = nn.Sequential(*blocks)
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DCNTower(nn.Module):
    """Cross network and MLP side by side over the same input. x (B, d) -> logit (B,)"""

    def __init__(self, dim: int, config: ModelConfig) -> None:
        super().__init__()
        self.cross = CrossNetV2(dim, config.cross_layers)
        self.deep = MLP(dim, config.hidden, config.dropout)
        self.head = nn.Linear(dim + self.deep.out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.cross(x), self.deep(x)], dim=1)).squeeze(1)


class FirstOrder(nn.Module):
    """One weight per sparse value plus a linear dense part: sparse (B, S), dense (B, D)
    -> (B,)"""

    def __init__(self, cardinalities: list[int], dense_dim: int) -> None:
        super().__init__()
        self.weights = FieldEmbedding(cardinalities, 1)
        nn.init.zeros_(self.weights.table.weight)
        self.linear = nn.Linear(dense_dim, 1)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.weights(sparse).sum(dim=(1, 2)) + self.linear(dense).squeeze(1)


class DenseEmbedding(nn.Module):
    """Each dense value scales a learnt vector of its own. dense (B, D) -> (B, D, dim)"""

    def __init__(self, dense_dim: int, dim: int) -> None:
        super().__init__()
        self.vectors = nn.Parameter(torch.randn(dense_dim, dim) * 0.01)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return dense.unsqueeze(2) * self.vectors


def pairwise_interactions(fields: torch.Tensor) -> torch.Tensor:
    """A factorisation machine's sum over field pairs of <v_i, v_j>, in linear time:
    half of (sum v)^2 - sum v^2. fields (B, F, dim) -> (B,)"""
    square_of_sum = fields.sum(dim=1).pow(2)
    sum_of_squares = fields.pow(2).sum(dim=1)
    return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1)


class LogisticRegression(nn.Module):
    """sparse (B, S), dense (B, D) -> logit (B,)"""

    def __init__(self, cardinalities: list[int], dense_dim: int, config: ModelConfig) -> None:
        super().__init__()
        self.first_order = FirstOrder(cardinalities, dense_dim)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.first_order(sparse, dense)


class DeepFM(nn.Module):
    """sparse (B, S), dense (B, D) -> logit (B,)"""

    def __init__(self, cardinalities: list[int], dense_dim: int, config: ModelConfig) -> None:
        super().__init__()
        self.first_order = FirstOrder(cardinalities, dense_dim)
        self.embedding = FieldEmbedding(cardinalities, config.embedding_dim)
        self.dense_embedding = DenseEmbedding(dense_dim, config.embedding_dim)
        dim = (len(cardinalities) + dense_dim) * config.embedding_dim
        self.deep = MLP(dim, config.hidden, config.dropout)
        self.head = nn.Linear(self.deep.out_dim, 1)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        fields = torch.cat([self.embedding(sparse), self.dense_embedding(dense)], dim=1)
        deep = self.head(self.deep(fields.flatten(1))).squeeze(1)
        return self.first_order(sparse, dense) + pairwise_interactions(fields) + deep


class WideAndDeep(nn.Module):
    """sparse (B, S), dense (B, D) -> logit (B,)"""

    def __init__(self, cardinalities: list[int], dense_dim: int, config: ModelConfig) -> None:
        super().__init__()
        self.wide = FirstOrder(cardinalities, dense_dim)
        self.embedding = FieldEmbedding(cardinalities, config.embedding_dim)
        self.deep = MLP(
            len(cardinalities) * config.embedding_dim + dense_dim, config.hidden, config.dropout
        )
        self.head = nn.Linear(self.deep.out_dim, 1)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        x = flat_inputs(self.embedding, sparse, dense)
        return self.wide(sparse, dense) + self.head(self.deep(x)).squeeze(1)


class DCNv2(nn.Module):
    """sparse (B, S), dense (B, D) -> logit (B,)"""

    def __init__(self, cardinalities: list[int], dense_dim: int, config: ModelConfig) -> None:
        super().__init__()
        self.embedding = FieldEmbedding(cardinalities, config.embedding_dim)
        self.tower = DCNTower(len(cardinalities) * config.embedding_dim + dense_dim, config)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        x = flat_inputs(self.embedding, sparse, dense)
        return self.tower(x)


class ESMM(nn.Module):
    """sparse (B, S), dense (B, D) -> (ctr logit (B,), cvr logit (B,))

    pCTCVR = sigmoid(ctr) * sigmoid(cvr); the training loop supervises pCTR with clicks
    and pCTCVR with click-and-conversion on every impression.
    """

    def __init__(self, cardinalities: list[int], dense_dim: int, config: ModelConfig) -> None:
        super().__init__()
        self.embedding = FieldEmbedding(cardinalities, config.embedding_dim)
        dim = len(cardinalities) * config.embedding_dim + dense_dim
        self.ctr_tower = DCNTower(dim, config)
        self.cvr_tower = DCNTower(dim, config)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = flat_inputs(self.embedding, sparse, dense)
        return self.ctr_tower(x), self.cvr_tower(x)


MODELS: dict[str, type[nn.Module]] = {
    "lr": LogisticRegression,
    "dcn": DCNv2,
    "deepfm": DeepFM,
    "widedeep": WideAndDeep,
    "esmm": ESMM,
}
# The kinds that score one click logit (the CTR task); ESMM is the conversion model.
CTR_KINDS = ("lr", "dcn", "deepfm", "widedeep")


def build_model(config: ModelConfig, cardinalities: list[int], dense_dim: int) -> nn.Module:
    if config.kind not in MODELS:
        raise ValueError(f"unknown model kind {config.kind!r}; choose from {sorted(MODELS)}")
    return MODELS[config.kind](cardinalities, dense_dim, config)


def embedding_tables(model: nn.Module) -> list[FieldEmbedding]:
    """Every per-value table of the model (embeddings, first-order weights)."""
    tables = [module for module in model.modules() if isinstance(module, FieldEmbedding)]
    if not tables:
        raise ValueError("model has no field embedding")
    return tables
