"""Box arithmetic shared by the scene generator and the detection benches."""

from data.records import box_area, box_overlap


def test_box_area_and_overlap():
    assert box_area((2, 3, 7, 5)) == 10
    assert box_area((5, 5, 3, 9)) == 0  # an empty box has no area
    assert box_overlap((0, 0, 10, 10), (5, 5, 20, 20)) == 25
    assert box_overlap((0, 0, 10, 10), (2, 2, 4, 4)) == box_area((2, 2, 4, 4))
    assert box_overlap((0, 0, 10, 10), (10, 0, 20, 10)) == 0  # ends are exclusive
    assert box_overlap((0, 0, 4, 4), (6, 6, 9, 9)) == 0
