"""MixDL distance losses: KL between softmaxed mixup coefficients and softmaxed feature similarities."""
from typing import Callable, Sequence

import torch
import torch.nn.functional as F


def cosine_similarity_matrix(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """All cosine similarities between rows of `queries` [M, ...] and rows of `keys` [N, ...].

    Trailing dims are flattened. Computed in float32 whatever the input dtype. Returns [M, N].
    """
    q = F.normalize(queries.flatten(1).float(), dim=1)
    k = F.normalize(keys.flatten(1).float(), dim=1)
    return q @ k.t()


def centred_cosine_similarity_matrix(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Cosine similarities after subtracting the mean row of `keys` from `queries` and `keys`. [M, N] float32.

    Plain cosines count the structure every sample shares (a face in the middle of the frame), so
    matching softmax(C) with them pushes different samples' whole feature maps towards orthogonality,
    and narrow generators get there by giving up shared structure. Centred cosines compare only how
    samples differ from their batch, which an anchor mixed from the sources with weights C already does.
    """
    mean = keys.float().mean(dim=0, keepdim=True)
    return cosine_similarity_matrix(queries.float() - mean, keys.float() - mean)


# The generator distance loss's feature similarities by --mixdl-g-sim name; 'cosine' is the authors'.
G_SIMILARITIES = {'cosine': cosine_similarity_matrix, 'centred': centred_cosine_similarity_matrix}
Similarity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def coefficient_kl(similarities: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """KL(p || q) with p = softmax(C) and q = softmax(similarities) rowwise, summed and divided by B^2.

    The paper's Eq. (5) and (9) write KL(q || p) and KL(r || p); the authors' code, and so the
    published lambda_G = 1000 and lambda_D = 1 (Eq. 10-11), use KL(p || q) averaged over all B*B
    elements, which is what this computes. Both inputs are [B, B]; returns a 0-d float32.
    The coefficients are treated as constants.
    """
    batch = coefficients.shape[0]
    if similarities.shape != (batch, batch) or coefficients.shape != (batch, batch):
        raise ValueError(f'Expected [B, B] similarities and coefficients, got {list(similarities.shape)} and {list(coefficients.shape)}')
    log_p = torch.log_softmax(coefficients.detach().float(), dim=1)
    log_q = torch.log_softmax(similarities.float(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum() / (batch * batch)


def feature_distance_loss(anchor_features: torch.Tensor, source_features: torch.Tensor,
                          coefficients: torch.Tensor) -> torch.Tensor:
    """Distance loss on one feature per sample (the D term, on proj of D's penultimate feature).

    anchor_features, source_features: [B, ...] (any dtype); coefficients: [B, B]. Returns 0-d float32.
    """
    if anchor_features.shape != source_features.shape or anchor_features.shape[0] != coefficients.shape[0]:
        raise ValueError(f'Anchor and source features must both be [B, ...] with B = {coefficients.shape[0]}, '
                         f'got {list(anchor_features.shape)} and {list(source_features.shape)}')
    return coefficient_kl(cosine_similarity_matrix(anchor_features, source_features), coefficients)


def layered_similarities(anchor_features: Sequence[torch.Tensor], source_features: Sequence[torch.Tensor],
                         layer_index: torch.Tensor, similarity: Similarity = cosine_similarity_matrix) -> torch.Tensor:
    """Row k holds similarity(anchor k, source i) on layer layer_index[k] for every source i.

    anchor_features, source_features: per-layer lists of [B, C_l, H_l, W_l] (any dtype).
    layer_index: [B] int64 on the CPU (drawn on the host, so grouping by layer needs no
    device synchronisation). One normalised matrix product per distinct layer: anchors that drew
    the same layer are gathered and compared against all sources at once. Returns [B, B] float32.
    similarity: one of G_SIMILARITIES' functions, given (anchors [m, ...], all sources [B, ...]).
    """
    if len(anchor_features) != len(source_features):
        raise ValueError(f'Got {len(anchor_features)} anchor layers but {len(source_features)} source layers')
    if layer_index.device.type != 'cpu' or layer_index.dim() != 1:
        raise ValueError('layer_index must be a 1-D CPU tensor so grouping by layer does not stall the device')
    batch = layer_index.shape[0]
    device = anchor_features[0].device
    blocks, row_order = [], []
    for layer in torch.unique(layer_index).tolist():
        rows_cpu = torch.nonzero(layer_index == layer).flatten()
        anchors, sources = anchor_features[layer], source_features[layer]
        if anchors.shape[0] != batch or sources.shape[0] != batch:
            raise ValueError(f'Layer {layer} features must have batch {batch}, got {anchors.shape[0]} and {sources.shape[0]}')
        rows = rows_cpu.to(device, non_blocking=True)
        blocks.append(similarity(anchors.index_select(0, rows), sources))
        row_order.append(rows_cpu)
    # Undo the grouping: stacked row j belongs to anchor order[j].
    order = torch.cat(row_order)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(batch)
    return torch.cat(blocks).index_select(0, inverse.to(device, non_blocking=True))


def layered_distance_loss(anchor_features: Sequence[torch.Tensor], source_features: Sequence[torch.Tensor],
                          layer_index: torch.Tensor, coefficients: torch.Tensor,
                          similarity: Similarity = cosine_similarity_matrix) -> torch.Tensor:
    """Generator distance loss: KL(softmax(C) || softmax(s)), s(k, i) on anchor k's drawn layer.

    See layered_similarities for the inputs. Returns a 0-d float32.
    """
    similarities = layered_similarities(anchor_features, source_features, layer_index, similarity=similarity)
    return coefficient_kl(similarities, coefficients)


def sample_feature_layers(batch_size: int, num_layers: int, generator: torch.Generator = None) -> torch.Tensor:
    """Draw one synthesis layer per anchor, uniformly, excluding the first and the last layer.

    Drawn on the CPU (pass a CPU generator) so the grouping in layered_similarities is host-side.
    Returns [batch_size] int64 in [1, num_layers - 2].
    """
    if num_layers < 3:
        raise ValueError(f'The generator distance loss needs at least 3 synthesis conv layers, got {num_layers}: '
                         f'use a resolution of 8 px or more')
    eligible = distance_layer_indices(num_layers)
    return torch.randint(eligible.start, eligible.stop, (batch_size,), generator=generator)


def distance_layer_indices(num_layers: int) -> range:
    """Indices of the synthesis conv layers the generator distance loss may draw: all but the first and the last."""
    return range(1, num_layers - 1)
