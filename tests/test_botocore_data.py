"""botocore loaded lean (relay.upload.botocore_data) resolves and signs as stock botocore
does: the same presigned URLs (endpoint, addressing, credential scope) for S3 in each partition,
the same STS endpoint for the credential chain, with the endpoints of other services gone."""

from __future__ import annotations

import aiobotocore.session
import pytest
from botocore.config import Config

from relay.upload.botocore_data import SERVICES, lean_loader

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2", "cn-north-1", "us-gov-west-1", "eu-central-2"]


def sessions() -> tuple[aiobotocore.session.AioSession, aiobotocore.session.AioSession]:
    stock, lean = aiobotocore.session.get_session(), aiobotocore.session.get_session()
    lean.register_component("data_loader", lean_loader(lean))
    for session in (stock, lean):
        session.set_credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    return stock, lean


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("style", ["virtual", "path"])
async def test_s3_urls_are_those_of_stock_botocore(region: str, style: str) -> None:
    urls = []
    for session in sessions():
        config = Config(s3={"addressing_style": style}, signature_version="s3v4")
        async with session.create_client("s3", region_name=region, config=config) as client:
            urls.append(
                await client.generate_presigned_url(
                    "put_object", Params={"Bucket": "site-clips", "Key": "cam/a b.mkv"}, ExpiresIn=60
                )
            )
    stock, lean = urls
    assert lean.split("X-Amz-Date=")[0] == stock.split("X-Amz-Date=")[0]
    assert "site-clips" in lean


@pytest.mark.parametrize("region", REGIONS)
async def test_sts_resolves_as_stock_botocore(region: str) -> None:
    endpoints = []
    for session in sessions():
        async with session.create_client("sts", region_name=region) as client:
            endpoints.append(client.meta.endpoint_url)
    assert endpoints[0] == endpoints[1]


def test_only_the_services_a_relay_reaches_are_kept() -> None:
    stock, lean = (session.get_component("data_loader").load_data("endpoints") for session in sessions())
    for partition in lean["partitions"]:
        assert set(partition["services"]) <= SERVICES
    aws = next(p for p in lean["partitions"] if p["partition"] == "aws")
    assert set(aws["services"]) == SERVICES
    assert len(stock["partitions"][0]["services"]) > 100
    # The S3 model keeps its shapes, with empty documentation.
    s3 = sessions()[1].get_component("data_loader").load_service_model("s3", "service-2")
    assert s3["shapes"]["PutObjectRequest"]["members"]["Body"]["documentation"] == ""
