#if canImport(Glibc)
import Glibc
#endif
import Logging

/// Moves the WAL into the database off the commit path. The audit writer's connection does
/// not checkpoint (SQLite's automatic checkpoint would run inside a commit, fsyncing the
/// database while every caller of the batch waits): its commits wake this thread once the
/// WAL holds `pages` pages, and a PASSIVE checkpoint on its own connection copies what no
/// reader still needs while the writer goes on committing. Under a steady load the WAL
/// restarts only after a checkpoint that copied all of it, which these may never be: past
/// `hardPages` the writer copies and empties it itself, so it stays bounded.
final class Checkpointer: @unchecked Sendable {
    static let hardPages: Int32 = 4_000
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var due = false
    private var closed = false
    private var done = 0
    let pages: Int32

    /// Starts the thread, on a connection of its own to the database at `path`.
    init(path: String, pages: Int32 = 1000, logger: Logger) throws(StoreError) {
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

    /// Checkpoints run to the end so far.
    var completed: Int {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return done
    }

    /// The writer committed, leaving `walPages` in the WAL.
    func committed(walPages: Int32) {
        guard walPages >= pages else { return }
        pthread_mutex_lock(mutex)
        due = true
        pthread_cond_signal(cond)
        pthread_mutex_unlock(mutex)
    }

    /// Ends the thread after the checkpoint it is running, if any.
    func close() {
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
