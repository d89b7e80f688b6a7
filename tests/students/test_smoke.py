def test_roster_for_own_class(client, world):
    r = client.get(f"/api/v1/classes/{world.class_a1}/students", headers=world["ct_a1"].headers)
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == 2
