import time, numpy as np, tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
out = {"classes": np.array([[b"class_%02d" % i for i in range(5)]], dtype=object), "embedding": np.random.rand(1,128).astype("float32"),
       "scores": np.random.rand(1,5).astype("float32"), "class_ids": np.arange(5, dtype="int64")[None]}
def fast(a):
    p = tensor_pb2.TensorProto()
    p.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in a.shape)
    if a.dtype == object or a.dtype.kind in "SU":
        p.dtype = types_pb2.DT_STRING; p.string_val.extend(a.ravel().tolist())
    else:
        p.dtype = tf.dtypes.as_dtype(a.dtype).as_datatype_enum; p.tensor_content = a.tobytes()
    return p
for k, a in out.items():
    assert fast(a) == tf.make_tensor_proto(a), (k, fast(a), tf.make_tensor_proto(a))
def t(f, n=2000):
    s = time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter() - s) / n * 1e6
print("make_tensor_proto us", t(lambda: [tf.make_tensor_proto(a) for a in out.values()]))
print("fast us", t(lambda: [fast(a) for a in out.values()]))
