"""NVIDIA's tritonclient, unchanged, against `strix serve`'s Open Inference Protocol routes.

Usage: kserve_client.py HOST:PORT MODEL INPUT.npy REFERENCE.npy
Prints one JSON object: the largest difference from the reference for each way of sending
tensors, and the error messages for bad requests.
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, model, input_path, reference_path = sys.argv[1:5]
x = np.load(input_path)
reference = np.load(reference_path)
client = httpclient.InferenceServerClient(url=url)
report = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready(model),
}
meta = client.get_model_metadata(model)
report["metadata"] = meta
name, out = meta["inputs"][0]["name"], meta["outputs"][0]["name"]


def infer(binary_in, binary_out, request_outputs=True):
    tensor = httpclient.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary_in)
    outputs = [httpclient.InferRequestedOutput(out, binary_data=binary_out)] if request_outputs else None
    result = client.infer(model, [tensor], outputs=outputs, request_id="r-1")
    got = result.as_numpy(out)
    assert got.shape == reference.shape, (got.shape, reference.shape)
    return float(np.max(np.abs(got - reference)))


report["max_diff"] = {
    "json": infer(False, False),
    "binary": infer(True, True),
    "binary_in_json_out": infer(True, False),
    "all_outputs_default": infer(True, True, request_outputs=False),
}


def error_of(shape, datatype, values):
    tensor = httpclient.InferInput(name, shape, datatype)
    tensor.set_data_from_numpy(values, binary_data=False)
    try:
        client.infer(model, [tensor])
    except InferenceServerException as e:
        return {"status": str(e.status()), "message": e.message()}
    return None


report["errors"] = {
    "shape": error_of([1, 3, 10, 10], "FP32", np.zeros((1, 3, 10, 10), np.float32)),
    "datatype": error_of(list(x.shape), "INT32", np.zeros(x.shape, np.int32)),
}
print(json.dumps(report))
