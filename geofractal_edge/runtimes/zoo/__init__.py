"""A model zoo: many bundles served under a measured memory budget, chosen per request. No torch.

`Zoo(folder, budget_bytes=..., policy="sage")` registers every bundle folder in `folder`;
`infer(inputs, key=...)` picks a model (expertise x cheapness x persistence), loads it if needed
(evicting the lowest-permission idle models), runs it and returns an `Answer`; `feedback(request_id,
quality)` teaches trust. The HTTP service (`server.py`) is imported only by `gfedge serve`.
"""

from geofractal_edge.runtimes.zoo.errors import BusyError, ModelTooLargeError, NoCandidateError, UnknownModelError, UnknownRequestError
from geofractal_edge.runtimes.zoo.policy import LRU, POLICIES, AlwaysBest, Ranking, Sage, View, make_policy
from geofractal_edge.runtimes.zoo.trust import TrustTable
from geofractal_edge.runtimes.zoo.zoo import Answer, Zoo

__all__ = [
    "LRU", "POLICIES", "AlwaysBest", "Answer", "BusyError", "ModelTooLargeError", "NoCandidateError", "Ranking", "Sage",
    "TrustTable", "UnknownModelError", "UnknownRequestError", "View", "Zoo", "make_policy",
]
