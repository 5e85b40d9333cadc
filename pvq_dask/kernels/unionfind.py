"""Union-find with integer offsets: reconcile per-block label frames into one.

Stitching tiles needs more than "these blocks belong together": each block labels its
lattice sites in its own index frame, and two blocks that share sites differ by an integer
translation. A union-find whose nodes carry the offset to their parent (a "weighted" or
"potential" union-find) merges the frames: ``find(a)`` returns the root of ``a`` and the
translation that takes ``a``'s indices into the root's frame.
"""

import numpy as np

__all__ = ["OffsetUnionFind", "reconcile_offsets"]


class OffsetUnionFind:
    """Disjoint sets of nodes ``0..n-1``, each with an integer offset to its set's root.

    ``index_in_root = index_in_node + offset(node)``.

    Parameters
    ----------
    n : int
        Number of nodes.
    dim : int
        Length of an offset vector.

    Examples
    --------
    >>> uf = OffsetUnionFind(3)
    >>> uf.union(0, 1, [2, 0])     # index in 1 = index in 0 + (2, 0)
    True
    >>> uf.union(1, 2, [0, -1])
    True
    >>> root, off = uf.find(0)
    >>> uf.union(2, 0, [0, 0])     # contradicts: 0 -> 2 is (2, -1)
    False
    >>> (uf.offset_between(0, 2)).tolist()
    [2, -1]
    """

    def __init__(self, n, dim=2):
        if n < 0 or dim < 1:
            raise ValueError(f"need n >= 0 and dim >= 1, got n={n}, dim={dim}")
        self.parent = np.arange(n, dtype=np.int64)
        self.offset = np.zeros((n, dim), dtype=np.int64)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, a):
        """Root of ``a`` and the offset that takes ``a``'s indices into the root's frame."""
        path = []
        while self.parent[a] != a:
            path.append(a)
            a = self.parent[a]
        root, total = a, np.zeros(self.offset.shape[1], dtype=np.int64)
        for node in reversed(path):          # compress: nearest-to-root first
            total = total + self.offset[node]
            self.offset[node] = total
            self.parent[node] = root
        return int(root), self.offset[path[0]].copy() if path else total

    def union(self, a, b, offset_ab):
        """Join ``a`` and ``b`` given ``index_in_b = index_in_a + offset_ab``.

        Returns False (and changes nothing) when ``a`` and ``b`` are already joined with a
        different offset.
        """
        offset_ab = np.asarray(offset_ab, dtype=np.int64)
        ra, oa = self.find(a)
        rb, ob = self.find(b)
        if ra == rb:
            return bool(np.array_equal(oa - ob, offset_ab))
        # root frames: index_in_ra = index_in_a + oa; index_in_rb = index_in_a + offset_ab + ob
        ra_to_rb = offset_ab + ob - oa
        if self.size[ra] > self.size[rb]:
            ra, rb, ra_to_rb = rb, ra, -ra_to_rb
        self.parent[ra] = rb
        self.offset[ra] = ra_to_rb
        self.size[rb] += self.size[ra]
        return True

    def offset_between(self, a, b):
        """``index_in_b - index_in_a`` for joined nodes; raises ValueError otherwise."""
        ra, oa = self.find(a)
        rb, ob = self.find(b)
        if ra != rb:
            raise ValueError(f"nodes {a} and {b} are in different sets")
        return oa - ob


def reconcile_offsets(n, pairs, offsets, weights):
    """Put ``n`` label frames into common frames from pairwise offset measurements.

    Edges are joined strongest first (a maximum spanning forest), so a weak edge that
    contradicts stronger ones is the one rejected.

    Parameters
    ----------
    n : int
        Number of frames (e.g. tiles).
    pairs : ndarray of int, shape (E, 2)
        Frames ``(a, b)`` measured against each other.
    offsets : ndarray of int, shape (E, D)
        ``index_in_b - index_in_a`` for each pair.
    weights : ndarray, shape (E,)
        Strength of each measurement (e.g. number of shared sites that agree).

    Returns
    -------
    root : ndarray of int, shape (n,)
        Set label of each frame (the root frame's number).
    to_root : ndarray of int, shape (n, D)
        Offset added to a frame's indices to express them in its root's frame.
    rejected : ndarray of bool, shape (E,)
        Edges that contradicted stronger ones.

    Examples
    --------
    >>> root, off, rej = reconcile_offsets(3, [[0, 1], [1, 2], [0, 2]],
    ...                                    [[1, 0], [1, 0], [5, 5]], [10, 10, 1])
    >>> len(set(root.tolist())), (off - off[0]).tolist(), rej.tolist()
    (1, [[0, 0], [-1, 0], [-2, 0]], [False, False, True])
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    offsets = np.asarray(offsets, dtype=np.int64)
    dim = offsets.shape[1] if offsets.ndim == 2 else 2
    offsets = offsets.reshape(-1, dim)
    weights = np.asarray(weights, dtype=float).reshape(-1)
    if not len(pairs) == len(offsets) == len(weights):
        raise ValueError(f"pairs ({len(pairs)}), offsets ({len(offsets)}) and weights "
                         f"({len(weights)}) must have the same length")
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= n):
        raise ValueError(f"pairs refer to frames outside 0..{n - 1}")
    uf = OffsetUnionFind(n, dim)
    rejected = np.zeros(len(pairs), dtype=bool)
    for e in np.argsort(-weights, kind="stable"):
        rejected[e] = not uf.union(pairs[e, 0], pairs[e, 1], offsets[e])
    found = [uf.find(a) for a in range(n)]
    root = np.array([r for r, _ in found], dtype=np.int64)
    to_root = np.array([o for _, o in found], dtype=np.int64).reshape(n, dim)
    return root, to_root, rejected
