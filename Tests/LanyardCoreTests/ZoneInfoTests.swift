import Foundation
@testable import LanyardCore
import Testing

/// The daemon reads a window's local time from the system's tz database with its own
/// TZif reader; Foundation (ICU, with its own copy of the database) is the reference here.
struct ZoneInfoTests {
    /// Zones whose rules have not changed in recent tz releases (so ICU's copy and the
    /// system's agree): northern and southern daylight time, half- and quarter-hour
    /// offsets, Lord Howe's half-hour shift, Dublin's negative daylight time, none at all.
    static let zones = [
        "Europe/Berlin", "Europe/London", "Europe/Dublin", "America/New_York", "America/Los_Angeles",
        "America/St_Johns", "America/Sao_Paulo", "Australia/Sydney", "Australia/Lord_Howe", "Pacific/Auckland",
        "Asia/Tokyo", "Asia/Kolkata", "Asia/Kathmandu", "Africa/Johannesburg", "UTC",
    ]

    /// Every 5 days 13 hours from 1990 to 2100: past the files' last transitions, where the footer's rule decides.
    @Test(arguments: zones)
    func offsetsAgreeWithICU(zone: String) throws {
        let ours = try #require(ZoneInfo(identifier: zone), "\(zone) is in /usr/share/zoneinfo (Debian's tzdata)")
        let icu = try #require(TimeZone(identifier: zone))
        var t: Int64 = 631_152_000  // 1990-01-01
        var checked = 0
        while t < 4_102_444_800 {  // 2100-01-01
            let expected = icu.secondsFromGMT(for: Date(timeIntervalSince1970: Double(t)))
            guard ours.offset(at: t) == expected else {
                Issue.record("\(zone) at \(t): \(ours.offset(at: t)) s, ICU says \(expected) s")
                return
            }
            t += 5 * 86_400 + 13 * 3_600
            checked += 1
        }
        #expect(checked > 7_000)
    }

    /// The hour around each change, minute by minute, in the years the footer rules.
    @Test(arguments: ["Europe/Berlin", "Australia/Sydney", "America/St_Johns", "Europe/Dublin"])
    func changesHappenAtTheirMinute(zone: String) throws {
        let ours = try #require(ZoneInfo(identifier: zone))
        let icu = try #require(TimeZone(identifier: zone))
        for year in [2040, 2077] {
            let start = Civil.days(year: year, month: 1, day: 1) * 86_400
            var t = start
            var previous = ours.offset(at: t)
            while t < start + 366 * 86_400 {
                let now = ours.offset(at: t)
                if now != previous {  // a change: every minute of the 2 hours around it
                    for m in stride(from: t - 3_600, to: t + 3_600, by: 60) {
                        #expect(ours.offset(at: m) == icu.secondsFromGMT(for: Date(timeIntervalSince1970: Double(m))), "\(zone) at \(m)")
                    }
                    previous = now
                }
                t += 1_800
            }
        }
    }

    /// Not names of the database's zones, or zones counting leap seconds (`right/`): refused.
    @Test(arguments: ["../etc/passwd", "/etc/localtime", "Europe/../../etc/shadow", "Nowhere/Atlantis", "", "Europe/", "-x/y",
                      "right/Europe/Berlin"])
    func namesThatAreNotZonesAreRefused(name: String) {
        #expect(ZoneInfo(identifier: name) == nil)
    }

    @Test func malformedFilesAreRefused() throws {
        let good = try #require(ZoneInfo.contents(of: "/usr/share/zoneinfo/Europe/Berlin"))
        #expect(ZoneInfo(identifier: "x", tzif: good) != nil)
        #expect(ZoneInfo(identifier: "x", tzif: []) == nil)
        #expect(ZoneInfo(identifier: "x", tzif: Array("TZif2".utf8) + Array(repeating: 0, count: 50)) == nil)
        for cut in stride(from: 0, to: good.count - 1, by: 97) {
            #expect(ZoneInfo(identifier: "x", tzif: Array(good[..<cut])) == nil, "cut at \(cut)")
        }
    }

    @Test(arguments: [
        ("CET-1CEST,M3.5.0,M10.5.0/3", true), ("<+0330>-3:30", true), ("AEST-10AEDT,M10.1.0,M4.1.0/3", true),
        ("IST-1GMT0,M10.5.0,M3.5.0/1", true), ("EST5EDT,M3.2.0/-1,M11.1.0/167", true), ("XX", false),
        ("CET-1CEST", false), ("CET-1CEST,M13.1.0,M10.5.0", false), ("CET-1CEST,M3.5.0,M10.5.0/168", false), ("CET-1x", false),
    ])
    func posixRules(text: String, valid: Bool) {
        #expect((ZoneInfo.Rule(text) != nil) == valid, "\(text)")
    }

    /// A rule keeping daylight time all year (RFC 8536's `0/0,J365/25`): daylight time
    /// holds across New Year, where a year's end meets the next one's start.
    @Test func daylightTimeAllYearHoldsAcrossNewYear() throws {
        let rule = try #require(ZoneInfo.Rule("EST5EDT,0/0,J365/25"))
        let newYear = Civil.days(year: 2030, month: 1, day: 1) * 86_400
        for t in stride(from: newYear - 6 * 3_600, through: newYear + 6 * 3_600, by: 900) {
            #expect(rule.offset(at: t) == -4 * 3_600, "at \(t - newYear) s from New Year (UTC)")
        }
    }
}
