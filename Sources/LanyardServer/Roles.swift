#if canImport(Glibc)
import Glibc
#endif
import LanyardCore

/// Who a caller on the admin socket is, from the kernel's uid/gid and the system group database.
struct Roles {
    var admin: Bool
    var approver: Bool

    init(credentials c: PeerCredentials, policy: Policy) {
        admin = c.uid == 0 || policy.admins.uids.contains(c.uid)
            || policy.admins.groups.contains { SystemGroups.isMember(uid: c.uid, gid: c.gid, of: $0) }
        let isAgentUID = policy.agents.contains { $0.selector.uid == c.uid }
        if let approvers = policy.approvers, !isAgentUID, c.uid != 0 {
            approver = approvers.principals.uids.contains(c.uid)
                || approvers.principals.groups.contains { SystemGroups.isMember(uid: c.uid, gid: c.gid, of: $0) }
        } else {
            approver = false
        }
    }
}

enum SystemGroups {
    /// Whether `uid` (primary group `gid`) belongs to the named group.
    static func isMember(uid: UInt32, gid: UInt32, of group: String) -> Bool {
        var grp = group_struct()
        var result: UnsafeMutablePointer<group_struct>?
        var buffer = [CChar](repeating: 0, count: 16 * 1024)
        guard getgrnam_r(group, &grp, &buffer, buffer.count, &result) == 0, result != nil else { return false }
        if grp.gr_gid == gid { return true }
        guard let name = userName(uid) else { return false }
        var i = 0
        while let member = grp.gr_mem?[i] {
            if String(cString: member) == name { return true }
            i += 1
        }
        return false
    }

    static func userName(_ uid: UInt32) -> String? {
        var pw = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16 * 1024)
        guard getpwuid_r(uid, &pw, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return String(cString: pw.pw_name)
    }

    static func groupID(_ name: String) -> gid_t? {
        var grp = group_struct()
        var result: UnsafeMutablePointer<group_struct>?
        var buffer = [CChar](repeating: 0, count: 16 * 1024)
        guard getgrnam_r(name, &grp, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return grp.gr_gid
    }
}

typealias group_struct = Glibc.group
