import glob, sys, time, json, numpy as np
sys.path.insert(0, "bench")
import tensorflow as tf, tensorflow_text  # noqa
from serving_latency import make_images
from sicot.serving.server import ModelServer, ServerOptions
from sicot.serving.grpc_api import PredictionServicer
from sicot.serving.client import predict_request
from sicot.serving.image_limits import check_image_inputs
t11 = len(sys.argv) > 1
if t11:
    from sicot.serving.server import configure_tensorflow_threads
    configure_tensorflow_threads(1, 1)
srv = ModelServer(ServerOptions(model_name="sicot", model_base_path="/work/runs/srv/model/export", rest_port=None, grpc_port=0))
srv.manager.start()
svc = PredictionServicer(srv)
images = make_images(200, 64, 0)
reqs = [predict_request("sicot", "serving_default", {"image": [im]}) for im in images]
model = srv.manager.get("sicot", None)
fn = model.signatures["serving_default"]
def bench(name, f, n=3):
    lat = []
    for _ in range(n):
        for i in range(200):
            s = time.perf_counter(); f(i); lat.append(time.perf_counter() - s)
    return name, round(float(np.percentile(lat, 50)) * 1e3, 3)
class Ctx:
    def abort(self, *a): raise RuntimeError(a)
out = []
for r in range(2):
    out.append(bench("in_process", lambda i: {k: v.numpy() for k, v in fn(image=tf.constant([images[i]])).items()}))
    out.append(bench("servicer.Predict", lambda i: svc.Predict(reqs[i], Ctx())))
    out.append(bench("servicer+serialize", lambda i: svc.Predict(reqs[i], Ctx()).SerializeToString()))
    out.append(bench("check_images", lambda i: check_image_inputs("serving_default", {"image": np.array([images[i]], dtype=object)}, 40_000_000)))
    out.append(bench("make_ndarray", lambda i: tf.make_ndarray(reqs[i].inputs["image"])))
print(json.dumps(out))
