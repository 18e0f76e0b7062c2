"""2-D neighborhood attention (NATTEN semantics), layout (batch, heads, H, W, head_dim).

Boundary rule (as NATTEN): with dilation ``d`` the axis splits into ``d`` interleaved groups;
inside a group a query at position ``p`` attends to the ``k`` group positions starting at
``clamp(p - k // 2, 0, group_len - k)``: windows shift inward at borders, never zero-pad.
Relative positional bias ``rpb`` has shape (heads, 2k-1, 2k-1) and is indexed by
``(key - query) / d + k - 1`` on each axis.
"""
import torch


def _window_index(length, kernel_size, dilation, device):
    """Key positions (length, kernel_size) and bias offsets (length, kernel_size) for one axis."""
    i = torch.arange(length, device=device)
    r, p = i % dilation, i // dilation
    group_len = (length - r + dilation - 1) // dilation
    if int(group_len.min()) < kernel_size:
        raise ValueError(
            f'neighborhood attention: an axis of length {length} with dilation {dilation} has '
            f'a group of {int(group_len.min())} positions, fewer than kernel_size={kernel_size}')
    start = torch.minimum((p - kernel_size // 2).clamp(min=0), group_len - kernel_size)
    t = torch.arange(kernel_size, device=device)
    key_group_pos = start[:, None] + t[None, :]
    keys = r[:, None] + dilation * key_group_pos
    bias_idx = key_group_pos - p[:, None] + kernel_size - 1
    return keys, bias_idx


def _gather_neighborhoods(x, kernel_size, dilation):
    """(B, h, H, W, D) -> (B, h, H, W, k*k, D): every query's k x k keys (memory heavy)."""
    B, h, H, W, D = x.shape
    rows, _ = _window_index(H, kernel_size, dilation, x.device)
    cols, _ = _window_index(W, kernel_size, dilation, x.device)
    x = x[:, :, rows]  # B h H k W D
    x = x[:, :, :, :, cols]  # B h H k W k D
    return x.permute(0, 1, 2, 4, 3, 5, 6).reshape(B, h, H, W, kernel_size * kernel_size, D)


def _bias_table(rpb, H, W, kernel_size, dilation):
    _, brow = _window_index(H, kernel_size, dilation, rpb.device)
    _, bcol = _window_index(W, kernel_size, dilation, rpb.device)
    bias = rpb[:, brow[:, None, :, None], bcol[None, :, None, :]]  # h H W k k
    return bias.reshape(rpb.shape[0], H, W, kernel_size * kernel_size)


def na2d_qk(q, k, kernel_size, dilation=1, rpb=None):
    """Attention logits q.k (+ rpb) over each query's neighborhood: (B, h, H, W, k*k)."""
    H, W = q.shape[2:4]
    keys = _gather_neighborhoods(k, kernel_size, dilation)
    attn = torch.einsum('bhxyd,bhxynd->bhxyn', q, keys)
    if rpb is not None:
        attn = attn + _bias_table(rpb, H, W, kernel_size, dilation).unsqueeze(0).to(attn.dtype)
    return attn


def na2d_av(attn, v, kernel_size, dilation=1):
    """Weighted sum of each query's neighborhood values: (B, h, H, W, D)."""
    vals = _gather_neighborhoods(v, kernel_size, dilation)
    return torch.einsum('bhxyn,bhxynd->bhxyd', attn, vals)


def na2d(q, k, v, kernel_size, dilation=1, rpb=None, scale=None):
    """Fused form: softmax(scale * q.k + rpb) @ v over each query's neighborhood."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    attn = na2d_qk(q * scale, k, kernel_size, dilation, rpb).softmax(dim=-1)
    return na2d_av(attn, v, kernel_size, dilation)
