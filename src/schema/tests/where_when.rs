//! Schema tests for `WhereWhen` and everything inside it: `ObsDataLocation`,
//! `ObservatoryLocation`, `AstroCoordSystem`, and `AstroCoords` with its `Time`,
//! `Position2D` and `Position3D` content.

use super::*;

/// A WhereWhen with the given AstroCoords content and attributes.
fn coords(attrs: &str, inner: &str) -> String {
    format!(
        "<WhereWhen><ObsDataLocation><ObservatoryLocation/><ObservationLocation>\
         <AstroCoordSystem id=\"UTC-FK5-GEO\"/><AstroCoords{attrs}>{inner}</AstroCoords>\
         </ObservationLocation></ObsDataLocation></WhereWhen>"
    )
}

fn pos2d(value2: &str) -> String {
    coords(
        "",
        &format!("<Position2D unit=\"deg\"><Value2>{value2}</Value2><Error2Radius>1</Error2Radius></Position2D>"),
    )
}

#[test]
fn where_when() {
    ok("<WhereWhen/>");
    ok("<WhereWhen id=\"ww1\"><Description/><Reference uri=\"x\"/></WhereWhen>");
    ok("<WhereWhen id=\" _a.b-c \"/>");
    for id in ["1abc", "a b", "", "a:b"] {
        assert!(
            matches!(
                bad(&format!("<WhereWhen id=\"{id}\"/>")),
                SchemaError::InvalidValue { .. }
            ),
            "{id:?}"
        );
    }
    let odl = "<ObsDataLocation><ObservatoryLocation/><ObservationLocation><AstroCoordSystem/><AstroCoords/>\
               </ObservationLocation></ObsDataLocation>";
    ok(&format!("<WhereWhen>{odl}{odl}</WhereWhen>"));
    assert!(matches!(
        bad("<WhereWhen><Time/></WhereWhen>"),
        SchemaError::UnexpectedElement { .. }
    ));
}

#[test]
fn obs_data_location_requires_both() {
    ok("<WhereWhen><ObsDataLocation><ObservationLocation><AstroCoords/><AstroCoordSystem/></ObservationLocation>\
        <ObservatoryLocation/></ObsDataLocation></WhereWhen>");
    let e = bad("<WhereWhen><ObsDataLocation><ObservatoryLocation/></ObsDataLocation></WhereWhen>");
    assert!(
        matches!(&e, SchemaError::MissingElement { element, .. } if element == "ObservationLocation"),
        "{e:?}"
    );
    let e = bad(
        "<WhereWhen><ObsDataLocation><ObservationLocation><AstroCoordSystem/><AstroCoords/>\
                 </ObservationLocation></ObsDataLocation></WhereWhen>",
    );
    assert!(
        matches!(&e, SchemaError::MissingElement { element, .. } if element == "ObservatoryLocation"),
        "{e:?}"
    );
    assert!(matches!(
        bad("<WhereWhen><ObsDataLocation/></WhereWhen>"),
        SchemaError::MissingElement { .. }
    ));
    let e = bad("<WhereWhen><ObsDataLocation><ObservatoryLocation/><ObservationLocation><AstroCoordSystem/>\
                 </ObservationLocation></ObsDataLocation></WhereWhen>");
    assert!(
        matches!(&e, SchemaError::MissingElement { element, .. } if element == "AstroCoords"),
        "{e:?}"
    );
    let e = bad(
        "<WhereWhen><ObsDataLocation><ObservatoryLocation/><ObservationLocation><AstroCoords/>\
                 </ObservationLocation></ObsDataLocation></WhereWhen>",
    );
    assert!(
        matches!(&e, SchemaError::MissingElement { element, .. } if element == "AstroCoordSystem"),
        "{e:?}"
    );
}

#[test]
fn observatory_location() {
    ok("<WhereWhen><ObsDataLocation><ObservatoryLocation id=\"GEOLUN anything\"><AstroCoords/>\
        <AstroCoordSystem id=\"UTC-GEOD-TOPO\"/></ObservatoryLocation><ObservationLocation><AstroCoordSystem/>\
        <AstroCoords/></ObservationLocation></ObsDataLocation></WhereWhen>");
    assert!(matches!(
        bad("<WhereWhen><ObsDataLocation><ObservatoryLocation><AstroCoords/><AstroCoords/></ObservatoryLocation>\
             <ObservationLocation><AstroCoordSystem/><AstroCoords/></ObservationLocation></ObsDataLocation></WhereWhen>"),
        SchemaError::DuplicateElement { .. }
    ));
}

#[test]
fn astro_coord_system_is_empty_with_id_values() {
    let sys = |s: &str| {
        format!(
            "<WhereWhen><ObsDataLocation><ObservatoryLocation/><ObservationLocation>{s}<AstroCoords/>\
             </ObservationLocation></ObsDataLocation></WhereWhen>"
        )
    };
    for id in ID_VALUES {
        ok(&sys(&format!("<AstroCoordSystem id=\"{id}\"/>")));
    }
    ok(&sys(
        "<AstroCoordSystem id=\"UTC-FK5-GEO\"></AstroCoordSystem>",
    ));
    ok(&sys("<AstroCoordSystem><!-- c --></AstroCoordSystem>"));
    for id in [
        "GPS-FK5-GEO",
        "UTC-HPC-TOPO",
        "utc-fk5-geo",
        " UTC-FK5-GEO",
        "",
    ] {
        let e = bad(&sys(&format!("<AstroCoordSystem id=\"{id}\"/>")));
        assert!(matches!(e, SchemaError::InvalidValue { .. }), "{id:?}");
    }
    let e = bad(&sys("<AstroCoordSystem> </AstroCoordSystem>"));
    assert!(
        matches!(
            e,
            SchemaError::UnexpectedText {
                empty_type: true,
                ..
            }
        ),
        "{e:?}"
    );
    let e = bad(&sys("<AstroCoordSystem><![CDATA[]]></AstroCoordSystem>"));
    assert!(
        matches!(
            e,
            SchemaError::UnexpectedText {
                empty_type: true,
                ..
            }
        ),
        "{e:?}"
    );
    let e = bad(&sys("<AstroCoordSystem><Time/></AstroCoordSystem>"));
    assert!(matches!(e, SchemaError::UnexpectedElement { .. }), "{e:?}");
}

#[test]
fn astro_coords() {
    ok(&coords(
        " coord_system_id=\"TT-ICRS-TOPO\"",
        "<Time><TimeInstant/></Time>",
    ));
    assert!(matches!(
        bad(&coords(" coord_system_id=\"TT-ICRS-topo\"", "")),
        SchemaError::InvalidValue { .. }
    ));
    assert!(matches!(
        bad(&coords("", "<Time/><Time/>")),
        SchemaError::DuplicateElement { .. }
    ));
    assert!(matches!(
        bad(&coords(" id=\"x\"", "")),
        SchemaError::UnexpectedAttribute { .. }
    ));
}

#[test]
fn time_and_time_instant() {
    ok(&coords("", "<Time/>"));
    ok(&coords(
        "",
        "<Time unit=\"s\"><Error>0.1</Error><TimeInstant><ISOTime>yesterday</ISOTime><TimeOffset> 1e3 </TimeOffset>\
         <TimeScale>UTC</TimeScale><ISOTime>again</ISOTime></TimeInstant><TimeInstant/><Error>2</Error></Time>",
    ));
    assert!(matches!(
        bad(&coords("", "<Time><Error>x</Error></Time>")),
        SchemaError::InvalidValue { .. }
    ));
    assert!(matches!(
        bad(&coords(
            "",
            "<Time><TimeInstant><TimeOffset>1,5</TimeOffset></TimeInstant></Time>"
        )),
        SchemaError::InvalidValue { .. }
    ));
    assert!(matches!(
        bad(&coords("", "<Time><TimeInterval/></Time>")),
        SchemaError::UnexpectedElement { .. }
    ));
    assert!(matches!(
        bad(&coords("", "<Time scale=\"x\"/>")),
        SchemaError::UnexpectedAttribute { .. }
    ));
}

#[test]
fn position_2d() {
    ok(&pos2d("<C1>1.5</C1><C2>-2</C2>"));
    ok(&pos2d("<C2> 2 </C2><C1>\n1\n</C1>"));
    ok(&coords(
        "",
        "<Position2D><Error2Radius>INF</Error2Radius><Name2>Dec</Name2><Value2><C1>0</C1><C2>0</C2></Value2>\
         <Name1>RA</Name1></Position2D>",
    ));
    let e = bad(&coords(
        "",
        "<Position2D><Value2><C1>0</C1><C2>0</C2></Value2></Position2D>",
    ));
    assert!(
        matches!(&e, SchemaError::MissingElement { element, .. } if element == "Error2Radius"),
        "{e:?}"
    );
    let e = bad(&coords(
        "",
        "<Position2D><Error2Radius>1</Error2Radius></Position2D>",
    ));
    assert!(
        matches!(&e, SchemaError::MissingElement { element, .. } if element == "Value2"),
        "{e:?}"
    );
    assert!(matches!(
        bad(&coords("", "<Position2D><Value2><C1>0</C1><C2>0</C2></Value2><Error2Radius>big</Error2Radius></Position2D>")),
        SchemaError::InvalidValue { .. }
    ));
    assert!(matches!(
        bad(&coords("", "<Position2D><Name3/><Value2><C1>0</C1><C2>0</C2></Value2><Error2Radius>1</Error2Radius></Position2D>")),
        SchemaError::UnexpectedElement { .. }
    ));
}

#[test]
fn value2_coordinates() {
    let e = bad(&pos2d("<C1>1</C1>"));
    assert!(
        matches!(&e, SchemaError::MissingElement { element, .. } if element == "C2"),
        "{e:?}"
    );
    assert!(matches!(
        bad(&pos2d("<C1>1</C1><C2>2</C2><C3>3</C3>")),
        SchemaError::UnexpectedElement { .. }
    ));
    assert!(matches!(
        bad(&pos2d("<C1>1</C1><C1>1</C1><C2>2</C2>")),
        SchemaError::DuplicateElement { .. }
    ));
    assert!(matches!(
        bad(&pos2d("<C1 pos_unit=\"deg\">1</C1><C2>2</C2>")),
        SchemaError::UnexpectedAttribute { .. }
    ));
    for v in ["abc", "", "1.5f", "+INF", "0x10"] {
        let e = bad(&pos2d(&format!("<C1>{v}</C1><C2>2</C2>")));
        assert!(
            matches!(
                e,
                SchemaError::InvalidValue {
                    attribute: None,
                    ..
                }
            ),
            "{v:?}"
        );
    }
    for v in ["NaN", "-INF", "1e", "1e400", ".5", "+1"] {
        ok(&pos2d(&format!("<C1>{v}</C1><C2>2</C2>")));
    }
}

#[test]
fn position_3d() {
    ok(&coords(
        "",
        "<Position3D unit=\"m\"><Name1>x</Name1><Name2>y</Name2><Name3>z</Name3>\
         <Value3><C3>3</C3><C1>1</C1><C2>2</C2></Value3></Position3D>",
    ));
    assert!(matches!(
        bad(&coords(
            "",
            "<Position3D><Value3><C1>1</C1><C2>2</C2></Value3></Position3D>"
        )),
        SchemaError::MissingElement { .. }
    ));
    assert!(matches!(
        bad(&coords("", "<Position3D><Value3><C1>1</C1><C2>2</C2><C3>3</C3></Value3><Error2Radius>1</Error2Radius></Position3D>")),
        SchemaError::UnexpectedElement { .. }
    ));
    assert!(matches!(
        bad(&coords("", "<Position3D/>")),
        SchemaError::MissingElement { .. }
    ));
}
