"""A minimal CRI client (what kubelet calls), for test_cri.py: `client.py SOCKET PB_DIR METHOD REQUEST_JSON`.

It runs under Debian's python3 (python3-grpcio, python3-protobuf), not the project's venv, and prints the response
as JSON. PB_DIR holds cri_subset_pb2.py, which the test compiles from cri_subset.proto with protoc.
"""

import sys

import grpc
from google.protobuf import json_format


def main() -> int:
    socket, pb_dir, method, request_json = sys.argv[1:5]
    sys.path.insert(0, pb_dir)
    import cri_subset_pb2 as pb

    request = json_format.Parse(request_json, getattr(pb, f"{method}Request")())
    response_type = getattr(pb, f"{method}Response")
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        call = channel.unary_unary(f"/runtime.v1.RuntimeService/{method}",
                                   request_serializer=type(request).SerializeToString,
                                   response_deserializer=response_type.FromString)
        try:
            response = call(request, timeout=120)
        except grpc.RpcError as error:
            print(f"{error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(json_format.MessageToJson(response, preserving_proto_field_name=True, including_default_value_fields=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
