"""Message builders for admn_node's outputs (standard message types only: the package has no interface package).

Every output carries the synchronized input stamp in `header.stamp`, so outputs, allocations and ground truth can be
joined after a bag replay. Layouts (copied into the README):

`~/pose` geometry_msgs/PoseWithCovarianceStamped (localization models)
    header.stamp        synchronized input stamp; header.frame_id = parameter `frame_id` (default "map")
    pose.pose.position  x, y = the model's 2-D position in metres (REP-103); z = 0
    pose.pose.orientation  identity (x=y=z=0, w=1): the model does not estimate orientation
    pose.covariance     6x6 row-major over (x, y, z, rotX, rotY, rotZ): [0] xx, [1] xy, [6] yx, [7] yy = the model's
                        2x2 covariance in m^2; z, rotX, rotY, rotZ variances = UNOBSERVED_VARIANCE (1e6, m^2 or rad^2)
                        and every other cross term 0. A huge variance (rather than 0 or -1) is what fusion nodes such
                        as robot_localization treat as "no information"; 0 would claim certainty.

`~/classification` (classification models)
    vision_msgs/Classification when vision_msgs is importable: header, results[] = ObjectHypothesis(class_id = class
    index as a string, score = softmax probability), sorted by score, best first.
    Otherwise diagnostic_msgs/DiagnosticArray: header, status[0] name "admn_node: classification", level OK,
    message "class <i> (<p>)", values: top_class, top_score, then class_<i> = probability for every class in index
    order (probabilities printed with 6 decimals).

`~/allocation` diagnostic_msgs/DiagnosticArray, one status per inference
    header.stamp        synchronized input stamp
    status[0].name      "admn_node: allocation";  level OK;  hardware_id = model name
    status[0].message   "budget <requested> used <used> (<source>)"
    status[0].values    in this order:
        budget_requested   int, the budget the engine was asked to obey (layers or cost units)
        budget_used        int, cost of the executed blocks (<= budget_requested)
        budget_origin      override | topic | default   (budget_override parameter, /compute_budget, default_budget)
        source             full | controller:<name> | naive   (how the engine chose the blocks)
        flops              int, analytic FLOPs of this inference
        inference_ms       engine time (preprocess + controller + model), 3 decimals
        active_blocks.<modality>   for every modality in the model's order: active block indices, ascending,
                                   comma-separated without spaces, e.g. "0,3,8,10,11" (block 0 is always on)
"""

from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped

UNOBSERVED_VARIANCE = 1e6
ALLOCATION_STATUS_NAME = "admn_node: allocation"
CLASSIFICATION_STATUS_NAME = "admn_node: classification"


def pose_message(stamp, frame_id: str, position_m: np.ndarray, covariance_m2: np.ndarray) -> PoseWithCovarianceStamped:
    msg = PoseWithCovarianceStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.pose.pose.position.x = float(position_m[0])
    msg.pose.pose.position.y = float(position_m[1])
    msg.pose.pose.orientation.w = 1.0
    covariance = np.zeros((6, 6))
    covariance[:2, :2] = np.asarray(covariance_m2, dtype=np.float64)
    covariance[[2, 3, 4, 5], [2, 3, 4, 5]] = UNOBSERVED_VARIANCE
    msg.pose.covariance = covariance.reshape(-1).tolist()
    return msg


def format_blocks(blocks) -> str:
    return ",".join(str(int(b)) for b in blocks)


def allocation_message(stamp, model_name: str, result, budget_origin: str) -> DiagnosticArray:
    allocation = result.allocation
    status = DiagnosticStatus(level=DiagnosticStatus.OK, name=ALLOCATION_STATUS_NAME, hardware_id=model_name,
                              message=f"budget {allocation.budget_requested} used {allocation.budget_used} "
                                      f"({allocation.source})")
    pairs = [("budget_requested", str(allocation.budget_requested)), ("budget_used", str(allocation.budget_used)),
             ("budget_origin", budget_origin), ("source", allocation.source), ("flops", str(int(result.flops))),
             ("inference_ms", f"{result.timings_ms.get('total', float('nan')):.3f}")]
    pairs += [(f"active_blocks.{name}", format_blocks(blocks)) for name, blocks in allocation.active_blocks().items()]
    status.values = [KeyValue(key=key, value=value) for key, value in pairs]
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array


def parse_allocation(array: DiagnosticArray) -> dict[str, str]:
    """Key/values of an `~/allocation` message (for consumers and tests)."""
    return {kv.key: kv.value for kv in array.status[0].values}


def classification_message_class():
    """vision_msgs/Classification if importable, else DiagnosticArray (the documented fallback layout)."""
    try:
        from vision_msgs.msg import Classification
    except ImportError:
        return DiagnosticArray
    return Classification


def classification_message(message_class, stamp, frame_id: str, probabilities: np.ndarray):
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-probabilities, kind="stable")
    if message_class is not DiagnosticArray:
        from vision_msgs.msg import ObjectHypothesis

        msg = message_class()
        msg.header.stamp = stamp
        msg.header.frame_id = frame_id
        msg.results = [ObjectHypothesis(class_id=str(int(i)), score=float(probabilities[i])) for i in order]
        return msg
    top = int(order[0])
    status = DiagnosticStatus(level=DiagnosticStatus.OK, name=CLASSIFICATION_STATUS_NAME,
                              message=f"class {top} ({probabilities[top]:.3f})")
    pairs = [("top_class", str(top)), ("top_score", f"{probabilities[top]:.6f}")]
    pairs += [(f"class_{i}", f"{p:.6f}") for i, p in enumerate(probabilities)]
    status.values = [KeyValue(key=key, value=value) for key, value in pairs]
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    array.header.frame_id = frame_id
    return array
