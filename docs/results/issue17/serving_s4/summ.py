import json, sys  # usage: python summ.py RUN.json ...
for f in sys.argv[1:]:
    d = json.load(open(f)); r = d['results']
    o = r['p50_overhead_over_in_process_ms']; b = r['batching_throughput_ratio']
    rps = {k: r[k]['load']['throughput_rps'] for k in r if isinstance(r[k], dict) and 'load' in r[k]}
    print(f, 'load', d['load_average_before_after'], 'intra/inter', d['config']['intra_op'], d['config']['inter_op'])
    print('  inproc p50 %.3f  ovh grpc %.3f rest %.3f | batching ovh %.3f %.3f | status grpc %.3f rest %.3f' % (
        r['in_process']['single']['p50_ms'], o['server.grpc'], o['server.rest'], o['server_batching.grpc'], o['server_batching.rest'],
        r['server.grpc_status_only']['single']['p50_ms'], r['server.rest_status_only']['single']['p50_ms']))
    print('  rps', rps, 'ratio', b, 'rows', r['server_batching.model_calls_under_load'])
    print('  cpu/req load', {k: r[k]['load'].get('server_cpu_ms_per_request') for k in r if isinstance(r[k], dict) and 'load' in r[k]})
