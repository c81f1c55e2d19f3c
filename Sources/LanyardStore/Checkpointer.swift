#if canImport(Glibc)
import Glibc
#endif
import Logging

/// Moves the WAL into the database off the commit path. The audit writer's connection does
/// not checkpoint (SQLite's automatic checkpoint would run inside a commit, fsyncing the
/// database while every caller of the batch waits): its commits wake this thread once
/// `pages` pages were added to the WAL since the last checkpoint it was woken for, and a
/// PASSIVE checkpoint on its own connection copies what no reader still needs while the
/// writer goes on committing. Each checkpoint syncs the WAL and the database, so it runs
/// per `pages` new pages, not per commit once the WAL is that long: a page the commits keep
/// changing (the ends of the audit table and its indexes) is copied once per checkpoint.
/// Under a steady load the WAL restarts only after a checkpoint that copied all of it,
/// which these may never be: past `hardPages` the writer copies the rest itself and the
/// next commit writes the WAL from its start again, so it stays bounded.
package final class Checkpointer: @unchecked Sendable {
    static let hardPages: Int32 = 4_000
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var due = false
    private var closed = false
    private var done = 0
    /// The WAL's length when the last checkpoint was asked for (0 once it restarted).
    private var askedAt: Int32 = 0
    private var timesAsked = 0
    let pages: Int32

    /// Starts the thread, on a connection of its own to the database at `path`.
    package init(path: String, pages: Int32 = 1000, logger: Logger) throws(StoreError) {
        self.pages = pages
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
        let box = SQLiteConnectionBox(try Store.open(path, cacheKiB: 64))  // it reads the WAL and writes pages, caching none
        startThread(name: "lanyard-ckpt") { [self] in loop(box.connection, logger) }
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    /// Checkpoints asked for so far.
    package var asked: Int {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return timesAsked
    }

    /// Checkpoints run to the end so far.
    var completed: Int {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return done
    }

    /// The writer committed, leaving `walPages` in the WAL.
    package func committed(walPages: Int32) {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        if walPages < askedAt { askedAt = 0 }  // the WAL restarted
        guard walPages - askedAt >= pages else { return }
        askedAt = walPages
        timesAsked += 1
        due = true
        pthread_cond_signal(cond)
    }

    /// Ends the thread after the checkpoint it is running, if any.
    package func close() {
        pthread_mutex_lock(mutex)
        closed = true
        pthread_cond_signal(cond)
        pthread_mutex_unlock(mutex)
    }

    private func loop(_ db: SQLiteConnection, _ logger: Logger) {
        while true {
            pthread_mutex_lock(mutex)
            while !due && !closed { pthread_cond_wait(cond, mutex) }
            let stop = closed
            due = false
            pthread_mutex_unlock(mutex)
            if stop { return }
            do {
                _ = try db.checkpoint()
                pthread_mutex_lock(mutex)
                done += 1
                pthread_mutex_unlock(mutex)
            } catch {
                // The WAL keeps every commit durable meanwhile; the next commit past the
                // threshold tries again.
                logger.warning("WAL checkpoint failed; retried after the next commits", metadata: ["error": "\(error)"])
            }
        }
    }
}
