"""Transport floor: the bench's own gRPC client against a grpcio server (same options and
thread pool as `sicot serve`) whose Predict returns a canned response of the real size without
running anything. p50 of this = what grpcio + the Python client cost per Predict here."""
import concurrent.futures, glob, json, subprocess, sys, time, os
import numpy as np
mode = sys.argv[1]
if mode == "server":
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    canned = predict_pb2.PredictResponse.FromString(open(sys.argv[3], "rb").read())
    class S(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            return canned
    srv = grpc.server(concurrent.futures.ThreadPoolExecutor(16), options=[
        ("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.so_reuseport", 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(S(), srv)
    srv.add_insecure_port("127.0.0.1:" + sys.argv[2]); srv.start(); print("ready", flush=True); srv.wait_for_termination()
else:
    sys.path.insert(0, "bench")
    import grpc, tensorflow as tf, tensorflow_text  # noqa
    from serving_latency import make_images, grpc_caller
    from sicot.serving.client import predict_request
    from sicot import contract
    d = sorted(glob.glob("/work/runs/srv/model/export/[0-9]*"))[-1]
    fn = tf.saved_model.load(d).signatures["serving_default"]
    images = make_images(200, 64, 0)
    out = {k: v.numpy() for k, v in fn(image=tf.constant([images[0]])).items()}
    from tensorflow_serving.apis import predict_pb2
    r = predict_pb2.PredictResponse(); r.model_spec.name = "sicot"; r.model_spec.version.value = 1
    r.model_spec.signature_name = "serving_default"
    for k, a in out.items(): r.outputs[k].CopyFrom(tf.make_tensor_proto(a))
    open("/tmp/canned.pb", "wb").write(r.SerializeToString())
    p = subprocess.Popen([sys.executable, __file__, "server", "8711", "/tmp/canned.pb"], stdout=subprocess.PIPE)
    p.stdout.readline()
    call = grpc_caller(8711, "sicot", "serving_default")
    res = {}
    for rnd in range(4):
        for name, f in (("null_grpc", call), ("in_process", lambda im: {k: v.numpy() for k, v in fn(image=tf.constant([im])).items()})):
            for im in images[:10]: f(im)
            lat = []
            for im in images:
                s = time.perf_counter(); f(im); lat.append(time.perf_counter() - s)
            res.setdefault(name, []).extend(lat)
    p.kill()
    print(json.dumps({k: {"p50_ms": round(float(np.percentile(v, 50)) * 1e3, 3), "n": len(v)} for k, v in res.items()}))
