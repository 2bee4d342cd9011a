"""boto3, unchanged, against `strix serve --model faceres`: Rekognition's face collection
actions. Prints one JSON object of what it saw; the Rust test asserts on it.

usage: rekognition_client.py HOST:PORT ASTRONAUT MESSI ASTRONAUT_MIRRORED COFFEE
"""
import json
import sys

import boto3
import botocore.exceptions

endpoint, astronaut, messi, mirrored, coffee = sys.argv[1:6]
client = boto3.client(
    "rekognition",
    endpoint_url=f"http://{endpoint}",
    region_name="us-east-1",
    aws_access_key_id="strix",
    aws_secret_access_key="strix",
)


def image(path):
    with open(path, "rb") as f:
        return {"Bytes": f.read()}


def error(call, **kwargs):
    try:
        call(**kwargs)
    except botocore.exceptions.ClientError as e:
        return {"code": e.response["Error"]["Code"], "message": e.response["Error"]["Message"],
                "status": e.response["ResponseMetadata"]["HTTPStatusCode"]}
    return None


out = {}
out["create"] = client.create_collection(CollectionId="staff")
out["create_again"] = error(client.create_collection, CollectionId="staff")
out["index_astronaut"] = client.index_faces(CollectionId="staff", Image=image(astronaut), ExternalImageId="eileen",
                                            MaxFaces=1, QualityFilter="AUTO")
out["index_messi"] = client.index_faces(CollectionId="staff", Image=image(messi), ExternalImageId="lionel")
out["index_coffee"] = client.index_faces(CollectionId="staff", Image=image(coffee), ExternalImageId="cup")
out["list_collections"] = client.list_collections()
out["list_faces"] = client.list_faces(CollectionId="staff")
out["search_mirrored"] = client.search_faces_by_image(CollectionId="staff", Image=image(mirrored))
out["search_mirrored_all"] = client.search_faces_by_image(CollectionId="staff", Image=image(mirrored),
                                                          FaceMatchThreshold=0)
face_id = out["index_astronaut"]["FaceRecords"][0]["Face"]["FaceId"]
out["search_faces"] = client.search_faces(CollectionId="staff", FaceId=face_id, FaceMatchThreshold=0)
out["compare_same"] = client.compare_faces(SourceImage=image(astronaut), TargetImage=image(mirrored))
out["compare_other"] = client.compare_faces(SourceImage=image(astronaut), TargetImage=image(messi))
out["no_face"] = error(client.search_faces_by_image, CollectionId="staff", Image=image(coffee))
out["unknown_collection"] = error(client.search_faces_by_image, CollectionId="nobody", Image=image(astronaut))
out["bad_threshold"] = error(client.search_faces_by_image, CollectionId="staff", Image=image(astronaut),
                             FaceMatchThreshold=120)
out["too_many"] = error(client.index_faces, CollectionId="staff", Image=image(astronaut), MaxFaces=101)
out["delete_faces"] = client.delete_faces(CollectionId="staff",
                                          FaceIds=[face_id, "00000000-0000-4000-8000-0000000003e7"])
out["after_delete"] = client.search_faces_by_image(CollectionId="staff", Image=image(mirrored), FaceMatchThreshold=0)
out["delete_collection"] = client.delete_collection(CollectionId="staff")
out["deleted_list"] = client.list_collections()
for value in out.values():
    if isinstance(value, dict):
        value.pop("ResponseMetadata", None)
print(json.dumps(out, default=str))
